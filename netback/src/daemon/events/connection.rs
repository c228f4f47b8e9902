//! The xenstore connection of the daemon's loop: the two watches it cannot run without, and
//! what happens when the connection is lost (see the parent module): drop every watch,
//! reconnect with a backoff, set the watches again.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use grant::{EventChannels, GrantOps};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use xenstore::{Client, Watch};

use super::{Daemon, RELEASE, ROOT, poll_err};
use crate::daemon::DaemonError;
use crate::daemon::reconnect::Backoff;
use crate::error_chain::Chain;
use crate::vif::VifId;

/// The two watches the daemon cannot run without.
pub(super) struct RootWatches {
    pub(super) root: Watch,
    pub(super) release: Watch,
}

impl RootWatches {
    pub(super) fn set(xs: &Client, root: &str) -> Result<Self, DaemonError> {
        let watch = |path: &str, token: &str| {
            xs.watch(path, Some(token)).map_err(|source| DaemonError::Watch { path: path.to_owned(), source })
        };
        Ok(Self {
            root: watch(root, "netback-backend-root")?,
            release: watch("@releaseDomain", "netback-release-domain")?,
        })
    }
}

impl<G> Daemon<G>
where
    G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
{
    pub(super) fn add_roots(&mut self, roots: RootWatches) -> Result<(), DaemonError> {
        let add = |fd: BorrowedFd<'_>, token| self.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token));
        add(roots.root.as_fd(), ROOT).map_err(poll_err)?;
        if let Err(e) = add(roots.release.as_fd(), RELEASE) {
            let _ = self.epoll.delete(&roots.root);
            return Err(poll_err(e));
        }
        self.roots = Some(roots);
        Ok(())
    }

    /// Notices a lost connection, and reconnects when the backoff says so.
    pub(super) fn check_connection(&mut self) -> Result<(), DaemonError> {
        match &self.backoff {
            None if !self.xs.is_connected() => self.connection_lost(),
            Some(backoff) if backoff.due(Instant::now()) => self.try_reconnect()?,
            _ => {}
        }
        Ok(())
    }

    /// The connection is gone, and with it every watch (their fds stay readable): out of
    /// the epoll set and dropped. The vifs and their workers stay as they are.
    fn connection_lost(&mut self) {
        tracing::warn!(
            vifs = self.vifs.len(),
            "lost the connection to xenstored; the data paths keep running; reconnecting"
        );
        if let Some(roots) = self.roots.take() {
            let _ = self.epoll.delete(&roots.root);
            let _ = self.epoll.delete(&roots.release);
        }
        for (_, (_, watch)) in self.watches.drain() {
            let _ = self.epoll.delete(&watch);
        }
        self.tokens.clear();
        self.backoff = Some(Backoff::new(Instant::now()));
    }

    /// One attempt: a new connection and the watches on it. Each watch's first event then
    /// re-evaluates what it covers: the root every vif (probing new ones, forgetting removed
    /// ones), `@releaseDomain` every domain, a frontend its vif; a vif where nothing changed
    /// writes nothing.
    fn try_reconnect(&mut self) -> Result<(), DaemonError> {
        let xs = match self.reconnect.reconnect() {
            Ok(xs) => xs,
            Err(e) => {
                self.retry_later(&e);
                return Ok(());
            }
        };
        let roots = match RootWatches::set(&xs, &self.root) {
            Ok(roots) => roots,
            Err(e) => {
                self.retry_later(&e);
                return Ok(());
            }
        };
        // The old client goes with its last handle; its reader thread has ended already.
        self.xs = xs;
        self.add_roots(roots)?;
        let failures = self.backoff.take().map_or(0, |b| b.failures);
        tracing::info!(failed_attempts = failures, "reconnected to xenstored; re-evaluating every vif");
        let live: Vec<(VifId, String)> =
            self.vifs.values().filter(|v| !v.detached).map(|v| (v.id, v.frontend.clone())).collect();
        for (id, frontend) in live {
            match self.xs.watch(&format!("{frontend}/state"), None) {
                Ok(watch) => self.add_frontend_watch(id, watch),
                // Lost again: the next round notices. The root's event re-evaluates it anyway.
                Err(e) => tracing::warn!(error = %e, "{id}: cannot watch the frontend {frontend}"),
            }
        }
        Ok(())
    }

    fn retry_later(&mut self, error: &dyn std::error::Error) {
        tracing::debug!("reconnecting to xenstored: {}", Chain(error));
        if let Some(backoff) = &mut self.backoff {
            backoff.failed(Instant::now());
        }
    }
}
