//! What the frontend and the toolstack ask of a vif beyond its rings, checked as Linux's
//! `connect` does: the number of queues and the `rate` limit.

use xenstore::Client;

use crate::vif::VifId;
use crate::xenbus::{XenbusError, keys};

/// The most queues a frontend may ask for: we advertise no `multi-queue-max-queues`, so one.
const MAX_QUEUES: u32 = 1;

/// Linux's `connect`: `multi-queue-num-queues` (default 1) above the maximum is fatal ("guest
/// requested %u queues, exceeding the maximum of %u."), and so is 0. Linux reads it with
/// `xenbus_read_unsigned`, which turns a value that is not a number into the default; we
/// refuse it instead, as we refuse every other frontend key that does not parse.
pub(super) fn check_queues(xs: &Client, frontend: &str) -> Result<(), XenbusError> {
    let path = format!("{frontend}/multi-queue-num-queues");
    let Some(value) = keys::read_optional(xs, &path)? else { return Ok(()) };
    let queues = match value.parse::<u32>() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(XenbusError::ParseKey { path, value, expected: "a number of queues" }),
    };
    if queues == 0 || queues > MAX_QUEUES {
        return Err(XenbusError::Protocol(format!(
            "{path}: guest requested {queues} queues, exceeding the maximum of {MAX_QUEUES}"
        )));
    }
    Ok(())
}

/// Linux's `xen_net_read_rate`: the toolstack's `rate` node, `<bytes>,<usecs>`. Linux warns
/// "Failed to parse network rate limit. Traffic unlimited." when it does not parse and
/// carries on; so do we. We do not enforce a rate that parses either (no credit scheduler
/// yet), and say so.
pub(super) fn check_rate(xs: &Client, backend: &str, id: VifId) {
    let path = format!("{backend}/rate");
    let value = match keys::read_optional(xs, &path) {
        Ok(Some(value)) => value,
        Ok(None) => return,
        Err(e) => return tracing::warn!("{id}: {e}"),
    };
    match parse_rate(&value) {
        Some((bytes, usecs)) => tracing::warn!(
            "{id}: {path} = {value:?} ({bytes} bytes per {usecs} µs): rate limiting is not implemented, traffic unlimited"
        ),
        None => tracing::warn!("{id}: {path} = {value:?}: failed to parse network rate limit, traffic unlimited"),
    }
}

/// `<bytes>,<usecs>`, both decimal (Linux: `simple_strtoul` must consume each part whole).
fn parse_rate(value: &str) -> Option<(u64, u64)> {
    let (bytes, usecs) = value.split_once(',')?;
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u64>().ok()).flatten();
    Some((number(bytes)?, number(usecs)?))
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_parse_as_linux_reads_them() {
        assert_eq!(parse_rate("10000000,50000"), Some((10_000_000, 50_000)));
        for bad in ["", "fast", "100", "100,", ",5", "1,2,3", "-1,5", "1 ,5"] {
            assert_eq!(parse_rate(bad), None, "{bad:?}");
        }
    }
}
