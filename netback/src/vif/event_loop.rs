//! The worker's loop: one epoll set over typed tokens, TX then RX work, and re-arming of
//! both rings' events before sleeping.
//!
//! Every pass re-reads the vif's [`Knobs`]: it drains at most `tx_drain_max` TX requests
//! and `rx_drain_max` RX frames, in grant-copy calls of at most `copy_batch` frames (see
//! `pass.rs`). Written responses are pushed (and the frontend notified if it asks) at once
//! when the worker runs out of work; while it stays busy, only every `notify_every`
//! responses or `notify_usecs` µs ([`Coalescer`]). When work runs out the worker polls for
//! `busy_poll_usecs`, then sleeps (`epoll_wait` without timeout) only after
//! `final_check_for_requests` found no TX request and the RX side is idle. After a pass that
//! consumed TX requests the TX event may be armed `req_event_ahead` slots ahead; the timerfd
//! then bounds the sleep. The uplink's level-readable fd is in the interest set only while
//! the RX ring holds the requests for the next frame or nothing waits in the uplink,
//! otherwise a guest that posts too few buffers would make it spin. After every pass the
//! RX watch (`rx_stall.rs`) expires frames and detects a stalled guest while the ring is
//! short; its own timerfd wakes the worker for that.
//!
//! Event storms (XSA-391's lesson, Linux's `xen_irq_lateeoi(.., XEN_EOI_FLAG_SPURIOUS)`): an
//! event after which a pass finds nothing to do is spurious. After two spurious events in a
//! row, with no progress in between (by whatever woke the worker), the channels leave the
//! interest set for 1 ms, doubling with every further spurious event up to
//! [`MAX_EVENT_MUTE`]; any pass that makes progress resets it. A well-behaved frontend
//! notifies only after producing work, so it is never muted twice in a row; a notification
//! that arrives after its work was already done (found by a pass the uplink woke) counts
//! once and is forgiven by that pass. A frontend that
//! notifies in a loop then costs its worker a wake-up per second instead of a core; the
//! rings are still served whenever the worker runs for another reason.

use grant::{EventChannel, EventChannels, GrantMapping, GrantOps};
use netif::{BackRing, RxRing, TxRing};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::journal::VifJournal;
use super::knobs::{KnobValues, Knobs};
use super::mtu::MtuGate;
use super::pacing::{Coalescer, Timer, ahead_wait};
use super::rx::RxPath;
use super::rx_stall::RxWatch;
use super::tx::TxPath;
use super::worker::{DatapathError, FatalCallback, StopFlag};
use super::{Datapath, DatapathConfig, VifCounters, VifId};
use crate::error_chain::Chain;
use crate::port::Uplink;

/// What woke the worker; the `u64` of each epoll registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Token {
    /// The TX event channel, or the only one.
    TxEvent = 1,
    /// The RX event channel (split channels only).
    RxEvent = 2,
    /// A frame waits in the uplink (armed only while RX buffers are posted).
    Uplink = 3,
    /// [`WorkerHandle::stop`](super::WorkerHandle::stop).
    Kill = 4,
    /// The coalescing timer.
    Timer = 5,
    /// The end of an event mute ([`EventThrottle`]).
    Unmute = 6,
    /// The RX watch's next look (expiry, stall deadline).
    RxWatch = 7,
}

impl Token {
    fn from_u64(v: u64) -> Option<Token> {
        [Token::TxEvent, Token::RxEvent, Token::Uplink, Token::Kill, Token::Timer, Token::Unmute, Token::RxWatch]
            .into_iter()
            .find(|t| *t as u64 == v)
    }
}

/// The longest mute of the event channels after spurious events (Linux: `HZ`).
pub(super) const MAX_EVENT_MUTE: Duration = Duration::from_secs(1);

/// Spurious-event backoff (see the module docs).
#[derive(Debug)]
struct EventThrottle {
    /// Spurious events in a row.
    spurious: u32,
    /// Whether the channels are out of the interest set.
    muted: bool,
    timer: Timer,
}

impl EventThrottle {
    /// How long to mute after `spurious` spurious events in a row (none for the first).
    fn mute_for(spurious: u32) -> Option<Duration> {
        let shift = spurious.checked_sub(2)?;
        Some(Duration::from_millis(1u64 << shift.min(10)).min(MAX_EVENT_MUTE))
    }
}

/// Everything the worker thread owns. Dropping it unmaps the rings and unbinds the channels.
pub(super) struct Worker<G: GrantOps + EventChannels, U: Uplink> {
    pub(super) id: VifId,
    pub(super) grants: G,
    pub(super) tx: BackRing<TxRing, GrantMapping>,
    pub(super) rx: BackRing<RxRing, GrantMapping>,
    pub(super) tx_channel: G::Channel,
    rx_channel: Option<G::Channel>,
    /// The configuration at connect (its batches are the knobs' initial values).
    #[allow(dead_code)]
    pub(super) config: DatapathConfig,
    pub(super) uplink: MtuGate<U>,
    pub(super) counters: Arc<VifCounters>,
    knobs: Arc<Knobs>,
    /// The knob values of the last pass.
    seen: KnobValues,
    pub(super) epoll: Epoll,
    timer: Timer,
    /// Wakes the worker for the RX watch's next look.
    pub(super) rx_timer: Timer,
    pub(super) rx_watch: RxWatch,
    coalescer: Coalescer,
    /// Whether the uplink fd is in the interest set (EPOLLIN) rather than disarmed.
    uplink_armed: bool,
    throttle: EventThrottle,
    pub(super) tx_path: TxPath,
    pub(super) rx_path: RxPath,
    /// The vif's state file, if kept (see [`super::journal`]).
    pub(super) journal: Option<Arc<VifJournal>>,
}

impl<G: GrantOps + EventChannels, U: Uplink> Worker<G, U> {
    /// Registers every fd in `epoll`: both channels, the uplink (armed) and `kill`.
    pub fn new(
        dp: Datapath<G>,
        uplink: U,
        counters: Arc<VifCounters>,
        knobs: Arc<Knobs>,
        epoll: Epoll,
        kill: &EventFd,
    ) -> Result<Self, nix::Error> {
        let timer = Timer::new()?;
        let interest = |token: Token| EpollEvent::new(EpollFlags::EPOLLIN, token as u64);
        epoll.add(&dp.tx_channel, interest(Token::TxEvent))?;
        if let Some(rx) = &dp.rx_channel {
            epoll.add(rx, interest(Token::RxEvent))?;
        }
        epoll.add(uplink.ready_fd(), interest(Token::Uplink))?;
        epoll.add(kill, interest(Token::Kill))?;
        epoll.add(&timer, interest(Token::Timer))?;
        let throttle = EventThrottle { spurious: 0, muted: false, timer: Timer::new()? };
        epoll.add(&throttle.timer, interest(Token::Unmute))?;
        let rx_timer = Timer::new()?;
        epoll.add(&rx_timer, interest(Token::RxWatch))?;
        let seen = knobs.get();
        let uplink = MtuGate::new(uplink, seen.max_frame_len(), counters.clone());
        let Datapath { id, grants, tx, rx, tx_channel, rx_channel, config, journal } = dp;
        Ok(Self {
            id,
            grants,
            tx,
            rx,
            tx_channel,
            rx_channel,
            config,
            uplink,
            counters,
            knobs,
            seen,
            epoll,
            timer,
            rx_timer,
            rx_watch: RxWatch::default(),
            coalescer: Coalescer::default(),
            uplink_armed: true,
            throttle,
            tx_path: TxPath::default(),
            rx_path: RxPath::default(),
            journal,
        })
    }

    /// The thread's body: serves until stopped or fatal; reports a fatal error through
    /// `on_fatal` unless a stop was requested first (see [`StopFlag`]).
    pub fn run(mut self, on_fatal: FatalCallback, stop: &StopFlag) -> Option<DatapathError> {
        let id = self.id;
        let result = self.serve();
        // A stall ends with its worker (a TAP's carrier stays off until the next connect).
        self.counters.rx_stalled.store(false, std::sync::atomic::Ordering::Relaxed);
        // Unmap and unbind before anyone hears about the end.
        drop(self);
        let error = match result {
            Ok(()) => {
                tracing::debug!(vif = %id, "worker stopped");
                return None;
            }
            Err(e) => e,
        };
        let stopping = stop.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopping {
            tracing::debug!(vif = %id, error = %Chain(&error), "worker failed while stopping");
            return None;
        }
        tracing::warn!(vif = %id, error = %Chain(&error), "fatal error; disabling vif");
        on_fatal(id, &error);
        drop(stopping);
        Some(error)
    }

    fn serve(&mut self) -> Result<(), DatapathError> {
        let mut events = [EpollEvent::empty(); 7];
        // A TAP outlives reconnects: a stall of the previous connection may have left its
        // carrier off.
        self.uplink.set_carrier(true);
        // The frontend may have queued requests before we started: look before sleeping.
        let mut busy = true;
        loop {
            let timeout = if busy { EpollTimeout::ZERO } else { EpollTimeout::NONE };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(DatapathError::Poll(e.into())),
            };
            let mut took_event = false;
            for event in &events[..n] {
                match Token::from_u64(event.data()) {
                    Some(Token::Kill) => return Ok(()),
                    Some(Token::TxEvent) => took_event |= self.take_event(false)?,
                    Some(Token::RxEvent) => took_event |= self.take_event(true)?,
                    Some(Token::Timer) => {
                        if self.timer.take() {
                            VifCounters::add(&self.counters.batching.timer_wakeups, 1);
                        }
                    }
                    Some(Token::Unmute) => {
                        self.throttle.timer.take();
                        self.mute_events(false)?;
                    }
                    Some(Token::RxWatch) => {
                        self.rx_timer.take();
                        self.rx_watch.clear_due();
                    }
                    Some(Token::Uplink) | None => {}
                }
            }
            let knobs = self.refresh_knobs();
            let pass = self.pass(&knobs)?;
            self.watch_rx(&knobs, pass.rx_consumed)?;
            if pass.progress {
                self.throttle.spurious = 0;
            } else if took_event {
                self.spurious_event()?;
            }
            let pending = self.unpushed();
            if self.coalescer.hold(&knobs, pending, pass.more, pass.progress) {
                VifCounters::add(&self.counters.batching.pushes_deferred, 1);
                busy = true;
                continue;
            }
            if pending > 0 {
                self.push_and_notify()?;
            }
            busy = pass.more || self.busy_poll(&knobs, &mut events)? || self.rearm(&knobs, pass.tx_consumed)?;
        }
    }

    /// The knobs for this pass (counting a change).
    fn refresh_knobs(&mut self) -> KnobValues {
        let knobs = self.knobs.get();
        if knobs != self.seen {
            tracing::debug!(vif = %self.id, ?knobs, "knobs changed");
            VifCounters::add(&self.counters.batching.knob_changes, 1);
            self.uplink.set_max_len(knobs.max_frame_len());
            self.seen = knobs;
        }
        knobs
    }

    /// Responses written but not yet pushed, both rings.
    fn unpushed(&self) -> u32 {
        let tx = self.tx.rsp_prod_pvt().wrapping_sub(self.tx.rsp_prod_pushed());
        let rx = self.rx.rsp_prod_pvt().wrapping_sub(self.rx.rsp_prod_pushed());
        tx + rx
    }

    /// Consumes a pending event of the TX (or only) channel, or of the RX channel. True if
    /// one was pending.
    fn take_event(&self, rx: bool) -> Result<bool, DatapathError> {
        let channel = if rx { self.rx_channel.as_ref().unwrap_or(&self.tx_channel) } else { &self.tx_channel };
        let pending = channel.take_pending().map_err(DatapathError::EventChannel)?;
        if pending {
            VifCounters::add(&self.counters.notifications_in, 1);
        }
        channel.unmask().map_err(DatapathError::EventChannel)?;
        Ok(pending)
    }

    /// A pass after an event found nothing to do: enough of these in a row, with no
    /// progress in between, mute the channels for a while.
    fn spurious_event(&mut self) -> Result<(), DatapathError> {
        VifCounters::add(&self.counters.events_spurious, 1);
        self.throttle.spurious = self.throttle.spurious.saturating_add(1);
        let Some(mute) = EventThrottle::mute_for(self.throttle.spurious) else { return Ok(()) };
        if self.throttle.muted {
            return Ok(());
        }
        tracing::debug!(vif = %self.id, spurious = self.throttle.spurious, ?mute, "spurious events: channels muted");
        VifCounters::add(&self.counters.event_mutes, 1);
        self.throttle.timer.arm(mute).map_err(|e| DatapathError::Poll(e.into()))?;
        self.mute_events(true)
    }

    /// Takes the event channels out of the interest set (`mute`) or puts them back.
    fn mute_events(&mut self, mute: bool) -> Result<(), DatapathError> {
        if self.throttle.muted == mute {
            return Ok(());
        }
        let flags = if mute { EpollFlags::empty() } else { EpollFlags::EPOLLIN };
        let poll = |e: nix::Error| DatapathError::Poll(e.into());
        self.epoll.modify(&self.tx_channel, &mut EpollEvent::new(flags, Token::TxEvent as u64)).map_err(poll)?;
        if let Some(rx) = &self.rx_channel {
            self.epoll.modify(rx, &mut EpollEvent::new(flags, Token::RxEvent as u64)).map_err(poll)?;
        }
        self.throttle.muted = mute;
        Ok(())
    }

    /// Publishes both rings' responses and notifies the frontend: at most once per call
    /// when the channel is shared, once per channel asking when split.
    fn push_and_notify(&mut self) -> Result<(), DatapathError> {
        // Skipping an empty push keeps the shared page untouched when there is nothing new.
        VifCounters::add(&self.counters.batching.pushes, 1);
        let tx = self.tx.rsp_prod_pushed() != self.tx.rsp_prod_pvt() && self.tx.push_responses_and_check_notify();
        let rx = self.rx.rsp_prod_pushed() != self.rx.rsp_prod_pvt() && self.rx.push_responses_and_check_notify();
        let (tx_channel, rx_channel) = match &self.rx_channel {
            None => (tx || rx, false),
            Some(_) => (tx, rx),
        };
        if tx_channel {
            self.notify(&self.tx_channel)?;
        }
        if let (true, Some(channel)) = (rx_channel, &self.rx_channel) {
            self.notify(channel)?;
        }
        Ok(())
    }

    fn notify(&self, channel: &G::Channel) -> Result<(), DatapathError> {
        channel.notify().map_err(DatapathError::EventChannel)?;
        VifCounters::add(&self.counters.notifications_out, 1);
        Ok(())
    }

    /// Before sleeping: arms the TX event (`req_event_ahead` slots ahead after a pass that
    /// consumed TX requests, with the timer bounding the sleep); arms the uplink fd if RX
    /// buffers are posted, or else disarms it and arms the RX event. True if work showed up
    /// meanwhile.
    fn rearm(&mut self, knobs: &KnobValues, tx_consumed: bool) -> Result<bool, DatapathError> {
        let mut tx_work = self.tx_path.final_check(&mut self.tx);
        let mut ahead = false;
        if !tx_work && tx_consumed && knobs.req_event_ahead > 1 && self.tx.unconsumed_requests() == 0 {
            tx_work = self.tx.final_check_for_requests_with_event(knobs.req_event_ahead);
            ahead = !tx_work;
        }
        // A frame waiting for more RX slots than are posted counts as "not posted": the
        // RX path arms the event for as many slots as it needs. The uplink stays armed
        // while short only if nothing waits there, to learn of the first frame (the RX
        // watch then disarms it: one wake-up per frame arriving into an empty uplink).
        let posted = self.rx_path.can_deliver(&self.rx);
        self.arm_uplink(posted || self.rx_watch.uplink_empty())?;
        let rx_work = !posted && self.rx_path.final_check(&mut self.rx);
        let work = tx_work || rx_work;
        let timer = |e: nix::Error| DatapathError::Poll(e.into());
        if ahead && !work {
            VifCounters::add(&self.counters.batching.events_armed_ahead, 1);
            self.timer.arm(ahead_wait(knobs)).map_err(timer)?;
        } else {
            self.timer.disarm().map_err(timer)?;
        }
        Ok(work)
    }

    fn arm_uplink(&mut self, armed: bool) -> Result<(), DatapathError> {
        if self.uplink_armed == armed {
            return Ok(());
        }
        let flags = if armed { EpollFlags::EPOLLIN } else { EpollFlags::empty() };
        let mut event = EpollEvent::new(flags, Token::Uplink as u64);
        self.epoll.modify(self.uplink.ready_fd(), &mut event).map_err(|e| DatapathError::Poll(e.into()))?;
        self.uplink_armed = armed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_start_at_the_second_spurious_event_and_double_up_to_a_second() {
        let ms = |n| EventThrottle::mute_for(n).map(|d| d.as_millis());
        assert_eq!((ms(0), ms(1)), (None, None));
        assert_eq!((ms(2), ms(3), ms(4), ms(11)), (Some(1), Some(2), Some(4), Some(512)));
        assert_eq!((ms(12), ms(13), ms(u32::MAX)), (Some(1000), Some(1000), Some(1000)));
    }
}
