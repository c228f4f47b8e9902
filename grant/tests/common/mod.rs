//! Shared harness: an in-process sim host, and guest domains as separate processes.
//!
//! A guest process is this test binary re-executed with `--exact child_guest --ignored`
//! (every test file defines that `#[ignore]`d test as `common::child_main()`), with the host
//! socket and the guest's token in the environment. It obeys one-line commands on stdin and
//! answers each with exactly one line, `@@ok ...` or `@@err ...`, on stdout.

#![allow(dead_code)]

use grant::sim::{
    Credentials, DomainConfig, DomainEvent, GTF_PERMIT_ACCESS, GrantEntryV1, Hypervisor, HypervisorHandle, SimDomain,
    SimToken,
};
use grant::{Access, DomId, EventChannel, EventChannels, GrantAlloc, GrantRef, SharedPages};
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
        Guest::spawn(&self.path, domid, token)
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

/// A guest domain running in a child process.
pub struct Guest {
    pub domid: DomId,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Guest {
    pub fn spawn(socket: &std::path::Path, domid: DomId, token: SimToken) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_guest", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ENV_SOCKET, socket)
            .env(ENV_TOKEN, token.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn guest");
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

    /// Ends the process (its domain dies) and reaps it.
    pub fn exit(mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
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
    let (Ok(socket), Ok(token)) = (std::env::var(ENV_SOCKET), std::env::var(ENV_TOKEN)) else {
        return; // run directly with --ignored: nothing to do
    };
    let dom = SimDomain::connect(&socket, Credentials::Guest { token: token.parse().unwrap() }).unwrap();
    println!("@@ok {}", dom.domid());
    let mut child = ChildState { dom, shares: HashMap::new(), channels: HashMap::new(), next: 0 };
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
