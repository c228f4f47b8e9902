//! The worker's loop: one epoll set over typed tokens, TX then RX work, and re-arming of
//! both rings' events before sleeping.
//!
//! Nothing is busy-polled. The worker sleeps (`epoll_wait` without timeout) only after
//! `final_check_for_requests` found no TX request and the RX side is idle; the uplink's
//! level-readable fd is in the interest set only while the RX ring has unconsumed requests,
//! otherwise a guest that posts no buffers would make it spin.

use grant::{EventChannel, EventChannels, GrantMapping, GrantOps};
use netif::{BackRing, RxRing, TxRing};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use std::error::Error;
use std::fmt;
use std::sync::{Arc, PoisonError};

use super::rx::{RxContext, RxPath};
use super::tx::{TxContext, TxPath};
use super::worker::{DatapathError, FatalCallback, StopFlag};
use super::{Datapath, DatapathConfig, VifCounters, VifId};
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
}

impl Token {
    fn from_u64(v: u64) -> Option<Token> {
        [Token::TxEvent, Token::RxEvent, Token::Uplink, Token::Kill].into_iter().find(|t| *t as u64 == v)
    }
}

/// An error with its chain of sources, on one line.
struct Chain<'a>(&'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// Everything the worker thread owns. Dropping it unmaps the rings and unbinds the channels.
pub(super) struct Worker<G: GrantOps + EventChannels, U: Uplink> {
    id: VifId,
    grants: G,
    tx: BackRing<TxRing, GrantMapping>,
    rx: BackRing<RxRing, GrantMapping>,
    tx_channel: G::Channel,
    rx_channel: Option<G::Channel>,
    config: DatapathConfig,
    uplink: U,
    counters: Arc<VifCounters>,
    epoll: Epoll,
    /// Whether the uplink fd is in the interest set (EPOLLIN) rather than disarmed.
    uplink_armed: bool,
    tx_path: TxPath,
    rx_path: RxPath,
}

impl<G: GrantOps + EventChannels, U: Uplink> Worker<G, U> {
    /// Registers every fd in `epoll`: both channels, the uplink (armed) and `kill`.
    pub fn new(
        dp: Datapath<G>,
        uplink: U,
        counters: Arc<VifCounters>,
        epoll: Epoll,
        kill: &EventFd,
    ) -> Result<Self, nix::Error> {
        let interest = |token: Token| EpollEvent::new(EpollFlags::EPOLLIN, token as u64);
        epoll.add(&dp.tx_channel, interest(Token::TxEvent))?;
        if let Some(rx) = &dp.rx_channel {
            epoll.add(rx, interest(Token::RxEvent))?;
        }
        epoll.add(uplink.ready_fd(), interest(Token::Uplink))?;
        epoll.add(kill, interest(Token::Kill))?;
        let Datapath { id, grants, tx, rx, tx_channel, rx_channel, config } = dp;
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
            epoll,
            uplink_armed: true,
            tx_path: TxPath::default(),
            rx_path: RxPath::default(),
        })
    }

    /// The thread's body: serves until stopped or fatal; reports a fatal error through
    /// `on_fatal` unless a stop was requested first (see [`StopFlag`]).
    pub fn run(mut self, on_fatal: FatalCallback, stop: &StopFlag) -> Option<DatapathError> {
        let id = self.id;
        let result = self.serve();
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
        let mut events = [EpollEvent::empty(); 4];
        // The frontend may have queued requests before we started: look before sleeping.
        let mut busy = true;
        loop {
            let timeout = if busy { EpollTimeout::ZERO } else { EpollTimeout::NONE };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(DatapathError::Poll(e.into())),
            };
            for event in &events[..n] {
                match Token::from_u64(event.data()) {
                    Some(Token::Kill) => return Ok(()),
                    Some(Token::TxEvent) => self.take_event(false)?,
                    Some(Token::RxEvent) => self.take_event(true)?,
                    Some(Token::Uplink) | None => {}
                }
            }
            let domid = self.id.domid;
            let (grants, uplink, counters) = (&self.grants, &self.uplink, &*self.counters);
            let tx_ctx = TxContext { grants, domid, uplink, counters, batch: self.config.tx_batch.max(1) };
            let tx_more = self.tx_path.drain(&mut self.tx, &tx_ctx)?;
            let rx_ctx = RxContext {
                grants,
                domid,
                uplink,
                counters,
                batch: self.config.rx_batch.max(1),
                features: self.config.features,
            };
            let rx_more = self.rx_path.deliver(&mut self.rx, &rx_ctx)?;
            self.push_and_notify()?;
            busy = tx_more || rx_more || self.rearm()?;
        }
    }

    /// Consumes a pending event of the TX (or only) channel, or of the RX channel.
    fn take_event(&self, rx: bool) -> Result<(), DatapathError> {
        let channel = if rx { self.rx_channel.as_ref().unwrap_or(&self.tx_channel) } else { &self.tx_channel };
        if channel.take_pending().map_err(DatapathError::EventChannel)? {
            VifCounters::add(&self.counters.notifications_in, 1);
        }
        channel.unmask().map_err(DatapathError::EventChannel)
    }

    /// Publishes both rings' responses and notifies the frontend: at most once per call
    /// when the channel is shared, once per channel asking when split.
    fn push_and_notify(&mut self) -> Result<(), DatapathError> {
        // Skipping an empty push keeps the shared page untouched when there is nothing new.
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

    /// Before sleeping: arms the TX event; arms the uplink fd if RX buffers are posted, or
    /// else disarms it and arms the RX event. True if work showed up meanwhile.
    fn rearm(&mut self) -> Result<bool, DatapathError> {
        let tx_work = self.tx_path.final_check(&mut self.tx);
        let posted = self.rx_path.can_deliver(&self.rx);
        self.arm_uplink(posted)?;
        let rx_work = !posted && self.rx_path.final_check(&mut self.rx);
        Ok(tx_work || rx_work)
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
