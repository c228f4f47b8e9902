//! A userspace netfront that behaves like Linux's `xen-netfront`, plus the tools to test a
//! netback with it.
//!
//! * [`xenbus`]: the handshake (`XenbusState` machine, ring publication, teardown);
//! * [`device`]: [`Netfront`], the connected device: TX/RX rings, buffer pools, counters;
//! * [`hostile`]: a frontend that grants nonsense (ungranted ring, overflowing ring, bad TX
//!   grant) and reports what the backend did;
//! * [`stack`]: a tiny ARP/ICMP-echo responder and ping frame builders/parsers;
//! * [`tcp`]: TCP/IPv4 and TCP/IPv6 frames with real (or blank) checksums, for offload tests;
//! * [`traffic`]: a self-verifying traffic generator and a loss/reorder-counting receiver;
//! * [`session`]: a guest's part of a peer-to-peer traffic run, with a JSON report.
#![forbid(unsafe_code)]

pub mod device;
pub mod hostile;
pub mod session;
pub mod stack;
pub mod tcp;
pub mod traffic;
pub mod xenbus;

pub use device::{DeviceError, Features, GsoKind, Netfront, NetfrontConfig, RxMeta, Stats, TxMeta};
pub use xenbus::{BackendFeatures, FrontendInfo, XenbusError, XenbusState};

/// MAC addresses: parsing and formatting in xenstore's `xx:xx:xx:xx:xx:xx` notation.
pub mod mac {
    /// A 48-bit Ethernet address.
    pub type Mac = [u8; 6];

    /// The broadcast address.
    pub const BROADCAST: Mac = [0xff; 6];

    /// Parses `xx:xx:xx:xx:xx:xx` strictly (six two-digit hex groups), as Linux netback does.
    pub fn parse_mac(s: &str) -> Option<Mac> {
        let mut mac = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in &mut mac {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(mac)
    }

    /// Formats as lowercase `xx:xx:xx:xx:xx:xx`.
    pub fn format_mac(mac: &Mac) -> String {
        mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parse_and_format_round_trip() {
            let mac = parse_mac("00:16:3e:0A:ff:01").unwrap();
            assert_eq!(mac, [0x00, 0x16, 0x3e, 0x0a, 0xff, 0x01]);
            assert_eq!(format_mac(&mac), "00:16:3e:0a:ff:01");
            for bad in ["", "00:16:3e:0a:ff", "00:16:3e:0a:ff:01:02", "0:16:3e:0a:ff:01", "zz:16:3e:0a:ff:01"] {
                assert_eq!(parse_mac(bad), None, "{bad:?}");
            }
        }
    }
}
