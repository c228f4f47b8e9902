//! Helpers shared by the end-to-end tests: running a test function in a separate process.
//!
//! A test re-executes its own test binary with `--exact <name> --ignored`, selecting an
//! `#[ignore]`d child test that plays another domain. Genuinely separate processes, no fork.
#![forbid(unsafe_code)]

pub mod loopback;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that marks a process as a spawned child, so an ignored child test
/// run by hand (`cargo test -- --ignored`) does nothing.
pub const ENV_CHILD: &str = "NETBACK_E2E_CHILD";

/// Starts the `#[ignore]`d test `name` of the current test binary in a new process, with
/// extra environment variables.
pub fn spawn_child<'a>(name: &str, env: impl IntoIterator<Item = (&'a str, String)>) -> std::io::Result<Child> {
    child_command(name, env)?.stdin(Stdio::null()).spawn()
}

/// As [`spawn_child`], with the child's stdin a pipe held by the returned `Child`: the
/// child sees end-of-file on stdin when the parent drops `child.stdin` or dies, a stop
/// signal that cannot outlive the test.
pub fn spawn_child_with_stdin<'a>(
    name: &str,
    env: impl IntoIterator<Item = (&'a str, String)>,
) -> std::io::Result<Child> {
    child_command(name, env)?.stdin(Stdio::piped()).spawn()
}

fn child_command<'a>(name: &str, env: impl IntoIterator<Item = (&'a str, String)>) -> std::io::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, "1")
        .envs(env)
        // The child's libtest chatter would read like a second test run; panics go to stderr.
        .stdout(Stdio::null());
    Ok(command)
}

/// Whether this process was started by [`spawn_child`].
pub fn is_child() -> bool {
    std::env::var_os(ENV_CHILD).is_some()
}

/// Waits for `child`, killing it after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
