use super::*;
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SRC: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
const DST: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];

fn frame(seq: u64) -> Vec<u8> {
    build_frame(DST, SRC, 7, seq, 60 + (seq as usize * 37) % 200)
}

#[test]
fn frame_round_trip_and_errors() {
    let f = build_frame(DST, SRC, 3, 42, 100);
    assert_eq!(f.len(), 100);
    assert_eq!(parse_frame(&f), Ok(FrameInfo { dst: DST, src: SRC, flow: 3, seq: 42, payload_len: 64 }));
    assert_eq!(parse_frame(&f[..13]), Err(FrameError::Foreign));
    assert_eq!(parse_frame(&f[..20]), Err(FrameError::TooShort { len: 20 }));
    assert_eq!(parse_frame(&f[..99]), Err(FrameError::BadLength { header: 64, actual: 63 }));
    let mut padded = build_frame(DST, SRC, 3, 42, 40);
    padded.resize(60, 0);
    assert_eq!(parse_frame(&padded).map(|i| i.payload_len), Ok(4), "Ethernet padding is accepted");
    padded[59] = 1;
    assert!(matches!(parse_frame(&padded), Err(FrameError::BadLength { .. })));
}

#[test]
fn generator_counts_paces_and_stops() {
    let cfg =
        GeneratorConfig { rate: 1000, count: Some(3), size: FrameSize::Fixed(64), ..GeneratorConfig::new(SRC, DST, 0) };
    let mut g = Generator::new(cfg).unwrap();
    let t0 = Instant::now();
    assert!(matches!(g.next(t0), Next::Frame(f) if f.len() == 64));
    assert_eq!(g.next(t0), Next::WaitUntil(t0 + Duration::from_millis(1)));
    assert!(matches!(g.next(t0 + Duration::from_millis(5)), Next::Frame(_)));
    assert!(matches!(g.next(t0 + Duration::from_millis(5)), Next::Frame(_)), "catches up");
    assert_eq!(g.next(t0 + Duration::from_millis(5)), Next::Done);
    assert_eq!(g.generated(), 3);

    let cfg = GeneratorConfig { count: None, duration: Some(Duration::from_secs(1)), ..cfg };
    let mut g = Generator::new(GeneratorConfig { rate: 0, ..cfg }).unwrap();
    assert!(matches!(g.next(t0), Next::Frame(_)));
    assert_eq!(g.next(t0 + Duration::from_secs(1)), Next::Done);

    for size in [FrameSize::Fixed(35), FrameSize::Uniform { min: 100, max: 99 }, FrameSize::Fixed(MAX_FRAME_LEN + 1)] {
        assert!(Generator::new(GeneratorConfig { size, ..cfg }).is_err(), "{size:?}");
    }
}

#[test]
fn receiver_accounts_gaps_reorders_and_duplicates() {
    let mut r = Receiver::new();
    r.expect(7, 8);
    for seq in [0, 1, 4, 2, 2, 6, 4] {
        r.receive(&frame(seq)).unwrap();
    }
    let mut bad = frame(3);
    bad[40] ^= 0xff;
    assert_eq!(r.receive(&bad), Err(FrameError::BadChecksum));
    assert_eq!(r.receive(&[0u8; 60]), Err(FrameError::Foreign));
    let rep = r.report();
    // Missing: 3, 5 (gaps) and 7 (tail).
    assert_eq!(
        rep.flows[&7],
        FlowReport { received: 7, bytes: rep.flows[&7].bytes, lost: 3, reordered: 1, duplicated: 2 }
    );
    assert_eq!((rep.corrupt, rep.foreign), (1, 1));
    assert!(!rep.is_perfect());
}

/// Expected counters by a direct model: first arrivals below the running maximum are
/// reorders, repeats are duplicates, never-seen numbers below `count` are lost.
fn model(count: u64, arrivals: &[u64]) -> (u64, u64, u64) {
    let (mut seen, mut next, mut reordered, mut duplicated) = (HashSet::new(), 0u64, 0, 0);
    for &s in arrivals {
        if !seen.insert(s) {
            duplicated += 1;
        } else if s < next {
            reordered += 1;
        }
        next = next.max(s + 1);
    }
    (count - seen.len() as u64, reordered, duplicated)
}

proptest! {
    #[test]
    fn any_generated_frame_verifies(seed: u64, flow: u32, min in 36usize..1600, extra in 0usize..400, n in 1u64..20) {
        let cfg = GeneratorConfig { flow, seed, size: FrameSize::Uniform { min, max: min + extra }, ..GeneratorConfig::new(SRC, DST, n) };
        let mut g = Generator::new(cfg).unwrap();
        let now = Instant::now();
        let mut seq = 0;
        while let Next::Frame(f) = g.next(now) {
            prop_assert!((min..=min + extra).contains(&f.len()));
            let info = parse_frame(&f).unwrap();
            prop_assert_eq!((info.flow, info.seq, info.dst, info.src), (flow, seq, DST, SRC));
            seq += 1;
        }
        prop_assert_eq!(seq, n);
    }

    #[test]
    fn any_flipped_byte_is_detected(seq: u64, flow: u32, len in 36usize..600, at: prop::sample::Index, flip in 1u8..=255) {
        let mut f = build_frame(DST, SRC, flow, seq, len);
        // Every byte after the MACs: EtherType, our header, payload.
        let i = 12 + at.index(len - 12);
        f[i] ^= flip;
        prop_assert!(parse_frame(&f).is_err(), "flip at {} undetected", i);
    }

    #[test]
    fn permuted_duplicated_dropped_stream_is_reported_exactly(
        count in 1u64..200,
        ops in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4), 0..300),
        shuffle: prop::sample::Index,
    ) {
        // Start from the in-order stream and apply drops (op 0), duplications (op 1) and
        // swaps with a neighbour (op 2, 3) at random positions.
        let mut arrivals: Vec<u64> = (0..count).collect();
        for (at, op) in ops {
            if arrivals.is_empty() { break; }
            let i = at.index(arrivals.len());
            match op {
                0 => { arrivals.remove(i); }
                1 => { let s = arrivals[i]; arrivals.insert(shuffle.index(arrivals.len() + 1), s); }
                _ => { let j = (i + 1 + shuffle.index(3)).min(arrivals.len() - 1); arrivals.swap(i, j); }
            }
        }
        let mut r = Receiver::new();
        r.expect(7, count);
        for &s in &arrivals {
            r.receive(&frame(s)).unwrap();
        }
        let got = r.report().flows[&7];
        let (lost, reordered, duplicated) = model(count, &arrivals);
        prop_assert_eq!((got.lost, got.reordered, got.duplicated), (lost, reordered, duplicated));
        prop_assert_eq!(got.received, arrivals.len() as u64);
    }
}

#[test]
fn jumbo_and_64k_frames_are_generated_up_to_netifs_limit() {
    assert_eq!(MAX_FRAME_LEN, 65535);
    for len in [9000, 65000, MAX_FRAME_LEN] {
        let cfg = GeneratorConfig { size: FrameSize::Fixed(len), ..GeneratorConfig::new(SRC, DST, 1) };
        let Next::Frame(f) = Generator::new(cfg).unwrap().next(Instant::now()) else { panic!("no frame") };
        assert_eq!(f.len(), len);
        assert_eq!(parse_frame(&f).unwrap().payload_len, len - HEADER_LEN);
    }
}
