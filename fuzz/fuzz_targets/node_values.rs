//! The daemon's parsers of xenstore node values a frontend or toolstack writes: numeric
//! nodes (`tx-ring-ref`, `rx-ring-ref`, `event-channel*`, `request-rx-copy`), `feature-*`
//! flags, `mac`, the frontend's `state`, `hotplug-status`, `netback-knobs/<name>`; plus the
//! xenbus decision on the parsed values and the netif extra-info slot decode.
//!
//! Input: the first 8 bytes are also decoded as an extra-info slot and drive the decision's
//! other inputs; the whole input, if UTF-8, is the node value (for knobs: `name=value`).
//!
//! Asserts: never panics; numbers are exactly the plain decimal `u32`s (checked against an
//! independent reading); flags are numbers, non-zero meaning on; a MAC parsed formats back
//! to the same text (case aside); a state parsed is the number written; a knob accepted is
//! reported by name and validates exactly when applying it succeeds; an extra slot that
//! decodes encodes back to a slot that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::fuzzing::{parse_flag, parse_u32};
use netback::vif::{KnobValues, Knobs, PartialKnobs};
use netback::xenbus::{FrontendState, Hotplug, Inputs, XenbusState, decide, format_mac, parse_mac};
use netif::abi::NetifExtraInfo;
use netif::{Extra, RingEntry};

fuzz_target!(|data: &[u8]| {
    let mut raw = [0u8; 8];
    raw[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
    if let Ok(extra) = Extra::decode(&NetifExtraInfo::decode(&raw)) {
        assert_eq!(Extra::decode(&extra.encode()), Ok(extra));
    }
    let Ok(s) = std::str::from_utf8(data) else { return };

    // Numbers: digits only, no sign, no spaces, at most u32::MAX.
    let reference = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.trim_start_matches('0'))
        .and_then(|d| if d.len() > 10 { None } else { Some(d.parse::<u64>().unwrap_or(0)) })
        .and_then(|n| u32::try_from(n).ok());
    assert_eq!(parse_u32(s), reference, "{s:?}");
    assert_eq!(parse_flag(s), reference.map(|n| n != 0));

    if let Some(mac) = parse_mac(s) {
        assert!(format_mac(&mac).eq_ignore_ascii_case(s), "{s:?}");
    }

    let state = FrontendState::parse(Some(s));
    if let Some(known) = XenbusState::parse(s) {
        assert_eq!(s.trim().parse::<u32>().ok(), Some(known as u32));
        assert_eq!(state, FrontendState::Known(known));
    }
    assert_eq!(state.number(), s.trim().parse::<u32>().ok());
    let hotplug = Hotplug::from_nodes(raw[1] & 1 != 0, Some(s));
    let ours = XenbusState::parse(&(raw[2] % 9).to_string()).expect("0..=8 are states");
    let published = XenbusState::parse(&(raw[3] % 10).to_string());
    let _ =
        decide(Inputs { ours, running: raw[4] & 1 != 0, frontend: state, online: raw[4] & 2 != 0, hotplug, published });

    if let Some((name, value)) = s.split_once('=') {
        let mut change = PartialKnobs::default();
        if change.set_named(name, value).is_ok() {
            let kebab = name.replace('_', "-");
            assert!(change.named().iter().any(|(n, _)| *n == kebab), "{name:?} not reported");
            let valid = KnobValues::default().with(&change).validate().is_ok();
            assert_eq!(Knobs::default().apply(&change).is_ok(), valid);
        }
    }
});
