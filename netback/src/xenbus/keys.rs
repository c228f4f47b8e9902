//! Reading what the frontend (ring refs, event channels, `request-rx-copy`, `feature-*`)
//! and the toolstack (`mac`) published, strictly, as Linux's `connect` / `connect_data_rings`.
//! Every failure names the node and the value found.

use xenstore::Client;

use super::XenbusError;
use crate::vif::{EventChannelSpec, FrontendFeatures, RingParams};

/// What connecting a vif needs from xenstore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectParams {
    /// The frontend's rings and event channels.
    pub rings: RingParams,
    /// The MAC from the backend directory.
    pub mac: [u8; 6],
    /// The frontend's `feature-*` keys.
    pub features: FrontendFeatures,
}

/// Reads `path`; `None` if the node is missing.
pub fn read_optional(xs: &Client, path: &str) -> Result<Option<String>, XenbusError> {
    match xs.read_string(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_enoent() => Ok(None),
        Err(source) => Err(XenbusError::ReadKey { path: path.to_owned(), source }),
    }
}

/// Reads `path`, which must exist.
fn read_required(xs: &Client, path: &str) -> Result<String, XenbusError> {
    read_optional(xs, path)?.ok_or_else(|| XenbusError::MissingKey { path: path.to_owned() })
}

/// Reads a decimal `u32` node.
fn read_u32(xs: &Client, path: &str, expected: &'static str) -> Result<u32, XenbusError> {
    let value = read_required(xs, path)?;
    parse_u32(&value).ok_or_else(|| XenbusError::ParseKey { path: path.to_owned(), value, expected })
}

/// A plain decimal number (no sign, no spaces), as xenbus_scanf's `%u` would accept
/// from a well-behaved peer.
pub(crate) fn parse_u32(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Reads everything `connect` needs: the frontend's `tx-ring-ref`, `rx-ring-ref`,
/// `event-channel-tx` + `event-channel-rx` (or `event-channel`), `request-rx-copy`
/// (non-zero), and the backend's `mac`.
pub fn read_connect_params(xs: &Client, frontend: &str, backend: &str) -> Result<ConnectParams, XenbusError> {
    let grant = "a grant reference";
    let tx_ring_ref = read_u32(xs, &format!("{frontend}/tx-ring-ref"), grant)?;
    let rx_ring_ref = read_u32(xs, &format!("{frontend}/rx-ring-ref"), grant)?;
    let port = "an event channel port";
    let split_tx = format!("{frontend}/event-channel-tx");
    let event_channels = match read_optional(xs, &split_tx)? {
        Some(value) => {
            let tx = parse_u32(&value).ok_or(XenbusError::ParseKey { path: split_tx, value, expected: port })?;
            let rx = read_u32(xs, &format!("{frontend}/event-channel-rx"), port)?;
            EventChannelSpec::Split { tx, rx }
        }
        None => EventChannelSpec::Shared(read_u32(xs, &format!("{frontend}/event-channel"), port)?),
    };
    let path = format!("{frontend}/request-rx-copy");
    let value = read_required(xs, &path)?;
    match parse_u32(&value) {
        Some(0) => return Err(XenbusError::RxCopyUnsupported { path, value }),
        Some(_) => {}
        None => return Err(XenbusError::ParseKey { path, value, expected: "a number" }),
    }
    let mac = read_mac(xs, backend)?;
    let features = read_features(xs, frontend)?;
    Ok(ConnectParams { rings: RingParams { tx_ring_ref, rx_ring_ref, event_channels }, mac, features })
}

/// A boolean `feature-*` key as Linux's `xenbus_read_unsigned(dir, key, default)`: any
/// non-zero number is on; an absent key, or one that is not a number (logged), is `default`.
fn read_flag(xs: &Client, dir: &str, key: &str, default: bool) -> Result<bool, XenbusError> {
    let path = format!("{dir}/{key}");
    let Some(value) = read_optional(xs, &path)? else { return Ok(default) };
    Ok(parse_flag(&value).unwrap_or_else(|| {
        tracing::warn!(path, value, default, "feature key is not a number: taken as absent");
        default
    }))
}

pub(crate) fn parse_flag(value: &str) -> Option<bool> {
    parse_u32(value).map(|n| n != 0)
}

/// Reads the frontend's `feature-sg`, `feature-gso-tcpv4`, `feature-gso-tcpv6`,
/// `feature-no-csum-offload`, `feature-ipv6-csum-offload` and `feature-rx-notify`, with
/// netif.h's defaults for absent keys ([`FrontendFeatures::default`]).
pub fn read_features(xs: &Client, frontend: &str) -> Result<FrontendFeatures, XenbusError> {
    let d = FrontendFeatures::default();
    Ok(FrontendFeatures {
        sg: read_flag(xs, frontend, "feature-sg", d.sg)?,
        gso_tcpv4: read_flag(xs, frontend, "feature-gso-tcpv4", d.gso_tcpv4)?,
        gso_tcpv6: read_flag(xs, frontend, "feature-gso-tcpv6", d.gso_tcpv6)?,
        csum_offload: !read_flag(xs, frontend, "feature-no-csum-offload", !d.csum_offload)?,
        ipv6_csum_offload: read_flag(xs, frontend, "feature-ipv6-csum-offload", d.ipv6_csum_offload)?,
        rx_notify: read_flag(xs, frontend, "feature-rx-notify", d.rx_notify)?,
    })
}

/// Reads and parses `<backend>/mac`.
pub fn read_mac(xs: &Client, backend: &str) -> Result<[u8; 6], XenbusError> {
    let path = format!("{backend}/mac");
    let value = read_required(xs, &path)?;
    parse_mac(&value).ok_or(XenbusError::ParseKey { path, value, expected: "a MAC address (xx:xx:xx:xx:xx:xx)" })
}

/// Parses exactly `xx:xx:xx:xx:xx:xx` (two hex digits per byte, as Linux's
/// `xen_net_read_mac`).
pub fn parse_mac(value: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = value.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `xx:xx:xx:xx:xx:xx`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_parsed_strictly() {
        assert_eq!(parse_mac("00:16:3e:0A:bc:ff"), Some([0x00, 0x16, 0x3e, 0x0a, 0xbc, 0xff]));
        for bad in
            ["", "00:16:3e:0a:bc", "00:16:3e:0a:bc:ff:00", "0:16:3e:0a:bc:ff", "00-16-3e-0a-bc-ff", "zz:16:3e:0a:bc:ff"]
        {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(parse_mac(" 00:16:3e:0a:bc:ff"), None);
        assert_eq!(format_mac(&[0, 0x16, 0x3e, 0xa, 0xbc, 0xff]), "00:16:3e:0a:bc:ff");
    }

    #[test]
    fn flags_are_numbers() {
        assert_eq!(parse_flag("1"), Some(true));
        assert_eq!(parse_flag("2"), Some(true));
        assert_eq!(parse_flag("0"), Some(false));
        for bad in ["", "yes", "true", " 1", "-1"] {
            assert_eq!(parse_flag(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_plain_decimal() {
        assert_eq!(parse_u32("8"), Some(8));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        for bad in ["", "-1", "+1", " 1", "0x10", "4294967296", "garbage"] {
            assert_eq!(parse_u32(bad), None, "{bad}");
        }
    }
}
