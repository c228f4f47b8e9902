//! Property test: the switch delivers every frame to exactly the ports a
//! simple reference model of a learning switch predicts.

use std::collections::{BTreeSet, HashMap};

use netback::frame::Frame;
use netback::port::{DropReason, TransmitOutcome, Uplink};
use netback::switch::{Switch, SwitchConfig, SwitchPort};
use proptest::prelude::*;

const PORTS: usize = 4;
/// Unicast MACs 0..4, then a multicast one and the broadcast address.
const MACS: [[u8; 6]; 6] = [
    [0x00, 0x16, 0x3e, 0, 0, 0],
    [0x00, 0x16, 0x3e, 0, 0, 1],
    [0x02, 0, 0, 0, 0, 2],
    [0x02, 0, 0, 0, 0, 3],
    [0x01, 0x00, 0x5e, 0, 0, 1],
    [0xff; 6],
];
const UNICAST: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// Port `port` transmits a frame from `MACS[src]` to `MACS[dst]`.
    Send { port: usize, src: usize, dst: usize },
    /// Port `port` is dropped and a new one plugged in its place.
    Replug { port: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..PORTS, 0..MACS.len(), 0..MACS.len()).prop_map(|(port, src, dst)| Op::Send { port, src, dst }),
        1 => (0..PORTS).prop_map(|port| Op::Replug { port }),
    ]
}

/// The reference: which MAC (index) lives behind which port (index).
#[derive(Default)]
struct Model {
    macs: HashMap<usize, usize>,
}

impl Model {
    /// Expected outcome and receiving ports.
    fn send(&mut self, port: usize, src: usize, dst: usize) -> (TransmitOutcome, BTreeSet<usize>) {
        if src >= UNICAST {
            return (TransmitOutcome::Dropped(DropReason::BadSourceMac), BTreeSet::new());
        }
        self.macs.insert(src, port);
        match self.macs.get(&dst) {
            Some(&p) if dst < UNICAST && p == port => (TransmitOutcome::Dropped(DropReason::Hairpin), BTreeSet::new()),
            Some(&p) if dst < UNICAST => (TransmitOutcome::Sent, BTreeSet::from([p])),
            _ => {
                let others: BTreeSet<usize> = (0..PORTS).filter(|&p| p != port).collect();
                (TransmitOutcome::Flooded { queued: others.len(), queue_full: 0 }, others)
            }
        }
    }

    fn replug(&mut self, port: usize) {
        self.macs.retain(|_, p| *p != port);
    }
}

fn frame(src: usize, dst: usize, tag: u32) -> Frame {
    let mut d = vec![0u8; 60];
    d[..6].copy_from_slice(&MACS[dst]);
    d[6..12].copy_from_slice(&MACS[src]);
    d[14..18].copy_from_slice(&tag.to_be_bytes());
    Frame::new(d)
}

proptest! {
    #[test]
    fn deliveries_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let sw = Switch::new(SwitchConfig::default());
        let mut ports: Vec<SwitchPort> = (0..PORTS).map(|i| sw.add_port(&format!("p{i}")).unwrap()).collect();
        let mut model = Model::default();
        for (tag, op) in (0u32..).zip(ops) {
            match op {
                Op::Send { port, src, dst } => {
                    let (outcome, want) = model.send(port, src, dst);
                    prop_assert_eq!(ports[port].transmit(frame(src, dst, tag)), outcome);
                    let mut got = BTreeSet::new();
                    for (i, p) in ports.iter().enumerate() {
                        while let Some(f) = p.pop() {
                            prop_assert_eq!(&f.data()[14..18], &tag.to_be_bytes());
                            prop_assert!(got.insert(i), "port {} got the frame twice", i);
                        }
                    }
                    prop_assert_eq!(got, want);
                }
                Op::Replug { port } => {
                    model.replug(port);
                    // Drop before re-adding: names are unique among live ports.
                    drop(std::mem::replace(&mut ports[port], sw.add_port("tmp").unwrap()));
                    ports[port] = sw.add_port(&format!("p{port}")).unwrap();
                }
            }
        }
        // The switch's table agrees with the model's.
        let ids: Vec<_> = ports.iter().map(|p| p.id()).collect();
        let mut table: Vec<_> = sw.mac_table().iter().map(|e| (e.mac, e.port)).collect();
        table.sort();
        let mut want: Vec<_> = model.macs.iter().map(|(&m, &p)| (MACS[m], ids[p])).collect();
        want.sort();
        prop_assert_eq!(table, want);
    }
}

#[derive(Debug, Clone)]
enum BatchOp {
    /// Port `port` transmits these (src, dst) frames with one `transmit_batch`.
    Send { port: usize, pairs: Vec<(usize, usize)> },
    /// Port `port` is dropped and a new one plugged in its place.
    Replug { port: usize },
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    let pair = (0..MACS.len(), 0..MACS.len());
    prop_oneof![
        // Few distinct pairs per batch, so the forwarding cache hits and misses in turn.
        8 => (0..PORTS, proptest::collection::vec(prop_oneof![3 => Just((0, 1)), 2 => Just((1, 0)), 1 => pair], 1..40))
            .prop_map(|(port, pairs)| BatchOp::Send { port, pairs }),
        1 => (0..PORTS).prop_map(|port| BatchOp::Replug { port }),
    ]
}

proptest! {
    /// The batched fast path (forwarding cache, runs pushed under one lock, batched pops)
    /// delivers exactly what the model says, in order, and counts the same drops.
    #[test]
    fn batched_deliveries_match_the_model(ops in proptest::collection::vec(batch_op(), 1..60)) {
        let sw = Switch::new(SwitchConfig::default());
        let mut ports: Vec<SwitchPort> = (0..PORTS).map(|i| sw.add_port(&format!("p{i}")).unwrap()).collect();
        let mut model = Model::default();
        let mut tag = 0u32;
        for op in ops {
            match op {
                BatchOp::Send { port, pairs } => {
                    let mut want: Vec<Vec<u32>> = vec![Vec::new(); PORTS];
                    let mut want_dropped = 0;
                    let mut frames = Vec::new();
                    for (src, dst) in pairs {
                        let (outcome, to) = model.send(port, src, dst);
                        want_dropped += usize::from(matches!(outcome, TransmitOutcome::Dropped(_)));
                        to.into_iter().for_each(|p| want[p].push(tag));
                        frames.push(frame(src, dst, tag));
                        tag += 1;
                    }
                    prop_assert_eq!(ports[port].transmit_batch(&mut frames), want_dropped);
                    prop_assert!(frames.is_empty(), "transmit_batch drains its input");
                    for (i, p) in ports.iter().enumerate() {
                        let mut got = Vec::new();
                        p.pop_batch(usize::MAX, &mut got);
                        let tags: Vec<u32> =
                            got.iter().map(|f| u32::from_be_bytes(f.data()[14..18].try_into().unwrap())).collect();
                        prop_assert_eq!(&tags, &want[i], "port {}", i);
                    }
                }
                BatchOp::Replug { port } => {
                    model.replug(port);
                    drop(std::mem::replace(&mut ports[port], sw.add_port("tmp").unwrap()));
                    ports[port] = sw.add_port(&format!("p{port}")).unwrap();
                }
            }
        }
    }
}
