//! The paced traffic generator. Time is passed in, so the generator is a pure state
//! machine; the caller sleeps when told to wait.

use super::{HEADER_LEN, MAX_FRAME_LEN, build_frame, splitmix64};
use crate::mac::Mac;
use std::time::{Duration, Instant};

/// How long generated frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this long.
    Fixed(usize),
    /// Uniformly random in `min..=max` (seeded, so reproducible).
    Uniform {
        /// Shortest frame.
        min: usize,
        /// Longest frame.
        max: usize,
    },
}

impl FrameSize {
    /// The bounds, checked against `HEADER_LEN..=MAX_FRAME_LEN`.
    fn bounds(self) -> Option<(usize, usize)> {
        let (min, max) = match self {
            FrameSize::Fixed(n) => (n, n),
            FrameSize::Uniform { min, max } => (min, max),
        };
        (HEADER_LEN <= min && min <= max && max <= MAX_FRAME_LEN).then_some((min, max))
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Ethernet destination.
    pub dst: Mac,
    /// Ethernet source.
    pub src: Mac,
    /// Flow id written into every frame.
    pub flow: u32,
    /// Frame sizes.
    pub size: FrameSize,
    /// Frames per second; 0 = as fast as the caller asks.
    pub rate: u64,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop this long after the first frame.
    pub duration: Option<Duration>,
    /// Seed of the size choice.
    pub seed: u64,
}

impl GeneratorConfig {
    /// `count` frames from `src` to `dst` on flow 0, sizes uniform in 60..=1514, unpaced.
    pub fn new(src: Mac, dst: Mac, count: u64) -> Self {
        Self {
            dst,
            src,
            flow: 0,
            size: FrameSize::Uniform { min: 60, max: 1514 },
            rate: 0,
            count: Some(count),
            duration: None,
            seed: 1,
        }
    }
}

/// What the generator wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this frame now.
    Frame(Vec<u8>),
    /// Nothing is due before this instant (rate limiting).
    WaitUntil(Instant),
    /// The count or the duration is reached.
    Done,
}

/// A generator of test frames with sequence numbers 0, 1, 2, ...
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GeneratorConfig,
    bounds: (usize, usize),
    seq: u64,
    rng: u64,
    start: Option<Instant>,
}

/// The generator configuration is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame size {0:?} outside {HEADER_LEN}..={MAX_FRAME_LEN} or min > max")]
pub struct InvalidFrameSize(pub FrameSize);

impl Generator {
    /// A generator for `cfg`; fails if the sizes cannot hold a test frame.
    pub fn new(cfg: GeneratorConfig) -> Result<Self, InvalidFrameSize> {
        let bounds = cfg.size.bounds().ok_or(InvalidFrameSize(cfg.size))?;
        Ok(Self { cfg, bounds, seq: 0, rng: cfg.seed, start: None })
    }

    /// Frames generated so far.
    pub fn generated(&self) -> u64 {
        self.seq
    }

    /// The next step at time `now`. Frame `n` is due at `start + n / rate`, where `start`
    /// is the first call's `now`; a late caller gets the frames it missed back to back.
    pub fn next(&mut self, now: Instant) -> Next {
        let start = *self.start.get_or_insert(now);
        if self.cfg.count.is_some_and(|c| self.seq >= c) || self.cfg.duration.is_some_and(|d| now >= start + d) {
            return Next::Done;
        }
        if self.cfg.rate > 0 {
            let due_ns = u128::from(self.seq) * 1_000_000_000 / u128::from(self.cfg.rate);
            let due = start + Duration::from_nanos(u64::try_from(due_ns).unwrap_or(u64::MAX));
            if now < due {
                return Next::WaitUntil(due);
            }
        }
        let (min, max) = self.bounds;
        let span = (max - min) as u64 + 1;
        let len = min + (splitmix64(&mut self.rng) % span) as usize;
        let frame = build_frame(self.cfg.dst, self.cfg.src, self.cfg.flow, self.seq, len);
        self.seq += 1;
        Next::Frame(frame)
    }
}
