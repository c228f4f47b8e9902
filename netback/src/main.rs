//! `netback`: the userspace Xen netif backend daemon.
fn main() {
    todo!()
}
