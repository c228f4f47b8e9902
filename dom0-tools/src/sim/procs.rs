//! The child processes of `nbctl sim`: the daemon and the guests. Whatever is still
//! running when [`Procs`] is dropped (an early error) is killed, so no orphan survives.

use super::{GuestArgs, SimArgs};
use anyhow::{Context, bail};
use grant::DomId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use simhost::GuestSpec;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a guest process ended.
#[derive(Debug)]
pub struct GuestExit {
    /// The guest.
    pub domid: DomId,
    /// Its exit status; `None` if it had to be killed.
    pub status: Option<ExitStatus>,
    /// Everything it printed on stdout.
    pub stdout: String,
}

/// The daemon and the guests.
#[derive(Debug, Default)]
pub struct Procs {
    daemon: Option<Child>,
    guests: Vec<(DomId, Child)>,
}

impl Procs {
    /// Starts `nbctl sim-netback` for the host in `dir`.
    pub fn spawn_daemon(&mut self, dir: &Path) -> anyhow::Result<u32> {
        let child = Command::new(std::env::current_exe().context("locating nbctl")?)
            .arg("--sim-dir")
            .arg(dir)
            .arg("sim-netback")
            .env_remove(simhost::ENV_SIM_TOKEN)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the netback daemon process")?;
        let pid = child.id();
        self.daemon = Some(child);
        Ok(pid)
    }

    /// Starts `nbctl sim-guest` as `guest`, sending to `peer`.
    pub fn spawn_guest(&mut self, guest: &GuestSpec, peer: [u8; 6], args: &SimArgs) -> anyhow::Result<()> {
        let guest_args = GuestArgs {
            peer,
            size: args.size,
            rate: args.rate,
            duration: args.duration,
            linger_ms: GuestArgs::DEFAULT_LINGER_MS,
            tcp: args.tcp,
            gso: args.tcp && args.gso,
        };
        let child = Command::new(std::env::current_exe().context("locating nbctl")?)
            .arg("sim-guest")
            .args(guest_args.to_args())
            .envs(guest.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the process of guest {}", guest.domid))?;
        self.guests.push((guest.domid, child));
        Ok(())
    }

    /// Fails if the daemon or a guest has exited already.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(daemon) = &mut self.daemon
            && let Some(status) = daemon.try_wait()?
        {
            bail!("the netback daemon exited early ({status})");
        }
        for (domid, guest) in &mut self.guests {
            if let Some(status) = guest.try_wait()? {
                bail!("guest {domid} exited early ({status})");
            }
        }
        Ok(())
    }

    /// Waits for every guest until `deadline`, killing the late ones.
    pub fn wait_guests(&mut self, deadline: Instant) -> anyhow::Result<Vec<GuestExit>> {
        let mut exits = Vec::new();
        for (domid, mut child) in self.guests.drain(..) {
            let status = wait_until(&mut child, deadline)?;
            let mut stdout = String::new();
            if let Some(mut out) = child.stdout.take() {
                out.read_to_string(&mut stdout).with_context(|| format!("reading guest {domid}'s report"))?;
            }
            exits.push(GuestExit { domid, status, stdout });
        }
        Ok(exits)
    }

    /// SIGTERMs the daemon and waits for it (killing it after `limit`); `None` if killed.
    pub fn stop_daemon(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut daemon) = self.daemon.take() else { bail!("no daemon was started") };
        if daemon.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(daemon.id()).context("daemon pid")?);
            kill(pid, Signal::SIGTERM).context("sending SIGTERM to the daemon")?;
        }
        wait_until(&mut daemon, Instant::now() + limit)
    }
}

/// Waits for `child` until `deadline`; kills it then and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> anyhow::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let children = self.daemon.iter_mut().chain(self.guests.iter_mut().map(|(_, c)| c));
        for child in children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
