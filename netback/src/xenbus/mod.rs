//! The backend half of the xenbus handshake for one vif, as Linux's
//! `drivers/net/xen-netback/xenbus.c`: publish features and go InitWait; on the frontend's
//! Connected read its keys, connect the data path and (after the hotplug gate) go
//! Connected; follow the frontend through Closing/Closed and back.

pub use netif::xenbus::XenbusState;
