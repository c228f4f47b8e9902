//! Shared harness: an in-process sim host, and domain processes (guests, or dom0 processes
//! that map and copy) as separate processes.
//!
//! A child process is this test binary re-executed with `--exact child_guest --ignored`
//! (every test file defines that `#[ignore]`d test as `common::child_main()`), with the host
//! socket and the guest's token (none for a dom0 process) in the environment. It obeys
//! one-line commands on stdin and answers each with exactly one line, `@@ok ...` or
//! `@@err ...`, on stdout.

#![allow(dead_code)]

use grant::sim::{
    Credentials, DomainConfig, DomainEvent, GTF_PERMIT_ACCESS, GrantEntryV1, Hypervisor, HypervisorHandle, SimDomain,
    SimToken,
};
use grant::{
    Access, CopyPtr, CopySegment, DomId, EventChannel, EventChannels, GrantAlloc, GrantMapping, GrantOps, GrantRef,
    GrantStatus, SharedPages,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ENV_SOCKET: &str = "GRANT_SIM_SOCKET";
const ENV_TOKEN: &str = "GRANT_SIM_TOKEN";
/// Connect as dom0 instead of with a token.
const ENV_DOM0: &str = "GRANT_SIM_DOM0";

/// The byte at `i` of a page filled with `seed`.
pub fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(seed)
}

/// A sim host served from this test process, with a record of domain events.
pub struct Host {
    pub hv: Hypervisor,
    pub handle: Option<HypervisorHandle>,
    pub path: PathBuf,
    pub events: Arc<Mutex<Vec<DomainEvent>>>,
}

impl Host {
    pub fn start() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/tmp/grant-sim-{}-{}.sock",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let hv = Hypervisor::new().expect("hypervisor");
        let events = Arc::new(Mutex::new(Vec::new()));
        let record = events.clone();
        hv.set_domain_event_hook(move |e| record.lock().unwrap().push(e));
        let handle = hv.serve(&path).expect("serve");
        Self { hv, handle: Some(handle), path, events }
    }

    pub fn dom0(&self) -> SimDomain {
        SimDomain::connect(&self.path, Credentials::Dom0).expect("dom0 connect")
    }

    /// Creates a guest and starts its process.
    pub fn guest(&self) -> Guest {
        let (domid, token) = self.hv.create_domain(DomainConfig::default()).expect("create");
        Guest::spawn(&self.path, domid, Some(token))
    }

    /// Starts a dom0 process (a backend that maps and copies).
    pub fn dom0_process(&self) -> Guest {
        Guest::spawn(&self.path, 0, None)
    }

    /// Waits until `event` was reported.
    pub fn wait_event(&self, event: DomainEvent) {
        wait_until(|| self.events.lock().unwrap().contains(&event));
    }
}

/// Polls `cond` for up to 10 s.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `fd` becomes readable within `ms`.
pub fn readable(fd: &impl AsFd, ms: u16) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
}

/// A domain running in a child process: a guest, or a process of dom0.
pub struct Guest {
    pub domid: DomId,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Guest {
    pub fn spawn(socket: &std::path::Path, domid: DomId, token: Option<SimToken>) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "child_guest", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ENV_SOCKET, socket);
        match token {
            Some(token) => command.env(ENV_TOKEN, token.to_string()),
            None => command.env(ENV_DOM0, "1"),
        };
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn guest");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut guest = Self { domid, child, stdin, stdout };
        let ready = guest.answer().expect("guest ready");
        assert_eq!(ready, vec![domid.to_string()]);
        guest
    }

    fn answer(&mut self) -> Result<Vec<String>, String> {
        loop {
            let mut line = String::new();
            assert_ne!(self.stdout.read_line(&mut line).unwrap(), 0, "guest {} exited", self.domid);
            // libtest may have printed `test child_guest ... ` on the same line first.
            let Some(at) = line.find("@@") else { continue };
            let reply = line[at..].trim_end();
            if let Some(rest) = reply.strip_prefix("@@ok") {
                return Ok(rest.split_whitespace().map(str::to_owned).collect());
            }
            if let Some(rest) = reply.strip_prefix("@@err") {
                return Err(rest.trim().to_owned());
            }
        }
    }

    /// Runs a command; `Err` carries the child's error text.
    pub fn try_cmd(&mut self, cmd: &str) -> Result<Vec<String>, String> {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    pub fn cmd(&mut self, cmd: &str) -> Vec<String> {
        self.try_cmd(cmd).unwrap_or_else(|e| panic!("guest command {cmd:?} failed: {e}"))
    }

    /// Shares pages; returns (share id, grefs).
    pub fn share(&mut self, to: DomId, pages: usize, access: &str) -> (String, Vec<GrantRef>) {
        let out = self.cmd(&format!("share {to} {pages} {access}"));
        (out[0].clone(), out[1..].iter().map(|g| g.parse().unwrap()).collect())
    }

    /// Ends the process (a guest's domain dies) and reaps it. Whatever it still holds is
    /// left to the host to release, as for any exit.
    pub fn exit(mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of every test file's `child_guest`: a guest obeying stdin commands.
pub fn child_main() {
    let Ok(socket) = std::env::var(ENV_SOCKET) else {
        return; // run directly with --ignored: nothing to do
    };
    let creds = match std::env::var(ENV_TOKEN) {
        Ok(token) => Credentials::Guest { token: token.parse().unwrap() },
        Err(_) if std::env::var_os(ENV_DOM0).is_some() => Credentials::Dom0,
        Err(_) => return,
    };
    let dom = SimDomain::connect(&socket, creds).unwrap();
    println!("@@ok {}", dom.domid());
    let mut child = ChildState { dom, shares: HashMap::new(), maps: HashMap::new(), channels: HashMap::new(), next: 0 };
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"exit") {
            std::process::exit(0);
        }
        match child.run(&words) {
            Ok(out) => println!("@@ok {out}"),
            Err(e) => println!("@@err {e}"),
        }
    }
    std::process::exit(0);
}

struct ChildState {
    dom: SimDomain,
    shares: HashMap<String, SharedPages>,
    maps: HashMap<String, GrantMapping>,
    channels: HashMap<u32, grant::sim::SimEventChannel>,
    next: u32,
}

impl ChildState {
    fn run(&mut self, w: &[&str]) -> Result<String, String> {
        let num = |i: usize| -> u64 { w[i].parse().unwrap() };
        let err = |e: &dyn std::fmt::Display| e.to_string();
        match w[0] {
            "share" => {
                let access = if w[3] == "ro" { Access::ReadOnly } else { Access::ReadWrite };
                let pages = self.dom.share(num(1) as DomId, num(2) as usize, access).map_err(|e| err(&e))?;
                let id = format!("s{}", self.next);
                self.next += 1;
                let grefs: Vec<String> = pages.grefs().iter().map(|g| g.to_string()).collect();
                self.shares.insert(id.clone(), pages);
                Ok(format!("{id} {}", grefs.join(" ")))
            }
            "fill" => {
                let page = self.shares[w[1]].page(num(2) as usize).unwrap();
                let seed = num(3) as u8;
                let bytes: Vec<u8> = (0..4096).map(|i| pattern(seed, i)).collect();
                page.copy_from(&bytes);
                Ok(String::new())
            }
            "check" => {
                let page = self.shares[w[1]].page(num(2) as usize).unwrap();
                let (off, len, seed) = (num(3) as usize, num(4) as usize, num(5) as u8);
                let mut bytes = vec![0u8; 4096];
                page.copy_to(&mut bytes[..]);
                let good = (off..off + len).all(|i| bytes[i] == pattern(seed, i - off));
                Ok(good.to_string())
            }
            "byte" => {
                let page = self.shares[w[1]].page(num(2) as usize).unwrap();
                let mut bytes = vec![0u8; 4096];
                page.copy_to(&mut bytes[..]);
                Ok(bytes[num(3) as usize].to_string())
            }
            "drop" => {
                self.shares.remove(w[1]).ok_or("no such share")?;
                Ok(String::new())
            }
            // map DOMID GREF ro|rw, map-many DOMID ro|rw GREF...: answers a mapping id.
            "map" | "map-many" => {
                let domid = num(1) as DomId;
                let (access, grefs) = if w[0] == "map" { (w[3], &w[2..3]) } else { (w[2], &w[3..]) };
                let access = if access == "ro" { Access::ReadOnly } else { Access::ReadWrite };
                let grefs: Vec<GrantRef> = grefs.iter().map(|g| g.parse().unwrap()).collect();
                let mapping = if w[0] == "map" {
                    self.dom.map(domid, grefs[0], access)
                } else {
                    self.dom.map_many(domid, &grefs, access)
                };
                let id = format!("m{}", self.next);
                self.next += 1;
                self.maps.insert(id.clone(), mapping.map_err(|e| err(&e))?);
                Ok(id)
            }
            "unmap" => {
                self.maps.remove(w[1]).ok_or("no such mapping")?;
                Ok(String::new())
            }
            // copy-loop DOMID GREF: copies into and out of the grant on a thread of its own
            // until the process ends; answers once the first round succeeded.
            "copy-loop" => {
                let (dom, domid, gref) = (self.dom.clone(), num(1) as DomId, num(2) as GrantRef);
                let (started, first) = std::sync::mpsc::channel();
                std::thread::spawn(move || copy_loop(&dom, domid, gref, &started));
                first.recv().map_err(|_| "the copy loop failed".to_owned())?;
                Ok(String::new())
            }
            "poke" => {
                let entry = GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: num(2) as DomId, frame: num(3) as u32 };
                self.dom.poke_grant_entry(num(1) as u32, entry).map_err(|e| err(&e))?;
                Ok(String::new())
            }
            "pending" => Ok(self.dom.retry_revocations().to_string()),
            "alloc" => {
                let ch = self.dom.alloc_unbound(num(1) as DomId).map_err(|e| err(&e))?;
                let port = ch.port();
                self.channels.insert(port, ch);
                Ok(port.to_string())
            }
            "bind" => match self.dom.bind_interdomain(num(1) as DomId, num(2) as u32) {
                Ok(ch) => {
                    let port = ch.port();
                    self.channels.insert(port, ch);
                    Ok(port.to_string())
                }
                Err(grant::EvtchnError::Bind { errno, .. }) => Err(format!("{errno:?}")),
                Err(e) => Err(err(&e)),
            },
            "notify" => self.channels[&(num(1) as u32)].notify().map(|()| String::new()).map_err(|e| err(&e)),
            "wait" => Ok(readable(&self.channels[&(num(1) as u32)], num(2) as u16).to_string()),
            "take" => self.channels[&(num(1) as u32)].take_pending().map(|b| b.to_string()).map_err(|e| err(&e)),
            "close" => {
                self.channels.remove(&(num(1) as u32)).ok_or("no such port")?;
                Ok(String::new())
            }
            "xs-write" => {
                let mut stream = self.dom.take_xenstore_stream().ok_or("no xenstore stream")?;
                stream.write_all(w[1].as_bytes()).map_err(|e| err(&e))?;
                Ok(String::new())
            }
            other => Err(format!("unknown command {other}")),
        }
    }
}

/// Copies 64-byte pieces into `domid`'s grant `gref` and back, for ever; signals `started`
/// after the first round in which every segment succeeded (and stops at the first that did not).
fn copy_loop(dom: &SimDomain, domid: DomId, gref: GrantRef, started: &std::sync::mpsc::Sender<()>) {
    let mut buf = vec![0x5Au8; 4096];
    loop {
        let (out, back) = buf.split_at_mut(2048);
        let mut segs: Vec<CopySegment<'_>> = out
            .chunks_mut(64)
            .enumerate()
            .map(|(i, c)| {
                let to = CopyPtr::Grant { domid, gref, offset: (i * 64) as u16 };
                CopySegment::new(CopyPtr::Local(vm_memory::VolatileSlice::from(c)), to, 64)
            })
            .chain(back.chunks_mut(64).enumerate().map(|(i, c)| {
                let from = CopyPtr::Grant { domid, gref, offset: (i * 64) as u16 };
                CopySegment::new(from, CopyPtr::Local(vm_memory::VolatileSlice::from(c)), 64)
            }))
            .collect();
        if dom.copy(&mut segs).is_err() || segs.iter().any(|s| s.status != GrantStatus::Okay) {
            return;
        }
        let _ = started.send(());
    }
}
