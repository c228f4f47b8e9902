//! `nbctl attach`, `list` and `detach` as an operator runs them, against a simulated host
//! started by the test (no daemon).

use grant::sim::DomainConfig;
use simhost::SimHost;
use std::path::Path;
use std::process::{Command, Output};

fn nbctl(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nbctl"));
    cmd.env_remove(simhost::ENV_SIM_DIR).env_remove(simhost::ENV_SIM_TOKEN);
    if let Some(dir) = dir {
        cmd.arg("--sim-dir").arg(dir);
    }
    cmd.args(args).output().expect("running nbctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "nbctl failed ({}):\n{}\n{}", out.status, stdout(&out), stderr(&out));
    stdout(&out)
}

#[test]
fn nbctl_without_a_sim_dir_says_how_to_get_one() {
    for args in [&["list"][..], &["attach", "1"], &["detach", "1", "0"]] {
        let out = nbctl(None, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("--sim-dir") && err.contains("nbctl sim") && err.contains("netback"), "{err}");
    }
}

#[test]
fn nbctl_rejects_bad_input_clearly() {
    let dir = Path::new("/nonexistent");
    for (args, expected) in [
        (&["attach", "one"][..], "invalid value 'one'"),
        (&["attach", "1", "--mac", "00:16:3e:zz:00:01"], "not a MAC address"),
        (&["detach", "1"], "<HANDLE>"),
        (&["sim", "--guests", "1"], "1 is not in 2..=250"),
        (&["sim", "--size", "20"], "outside 60..=65535"),
        (&["sim", "--size", "1000-100"], "MIN is larger than MAX"),
        (&["sim", "--duration", "0"], "number of seconds"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = nbctl(Some(dir), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    let out = nbctl(Some(dir), &["list"]);
    assert!(!out.status.success() && stderr(&out).contains("xenstored"), "{}", stderr(&out));
}

#[test]
fn attach_list_detach_through_the_binary() {
    let host = SimHost::start_temp().unwrap();
    let dir = Some(host.dir());
    let g = host.create_domain("web", DomainConfig::default()).unwrap().domid;
    let g_text = g.to_string();

    let out = ok(nbctl(dir, &["attach", &g_text, "--mac", "00:16:3E:00:00:2a", "--bridge", "xenbr0"]));
    assert!(out.contains(&format!("attached vif{g}.0")), "{out}");
    assert!(out.contains("00:16:3e:00:00:2a"), "{out}");
    assert!(out.contains(&format!("/local/domain/0/backend/vif/{g}/0")), "{out}");
    assert_eq!(host.toolstack().read_string(&format!("/local/domain/0/backend/vif/{g}/0/bridge")).unwrap(), "xenbr0");
    let out = ok(nbctl(dir, &["attach", &g_text, "--script", "vif-bridge"]));
    assert!(out.contains(&format!("attached vif{g}.1")), "{out}");

    // The environment variable works as well as --sim-dir.
    let out =
        Command::new(env!("CARGO_BIN_EXE_nbctl")).env(simhost::ENV_SIM_DIR, host.dir()).arg("list").output().unwrap();
    let listing = ok(out);
    let row = listing.lines().find(|l| l.starts_with(&format!("vif{g}.0"))).unwrap_or_else(|| panic!("{listing}"));
    assert!(row.contains("00:16:3e:00:00:2a") && row.contains("Initialising"), "{row}");
    assert!(listing.lines().any(|l| l.starts_with(&format!("vif{g}.1"))), "{listing}");
    assert!(listing.contains("(daemon not reachable"), "{listing}");

    let taken = nbctl(dir, &["attach", &g_text, "--handle", "0"]);
    assert!(!taken.status.success() && stderr(&taken).contains("already exists"), "{}", stderr(&taken));
    let unknown = nbctl(dir, &["attach", "99"]);
    assert!(!unknown.status.success() && stderr(&unknown).contains("domain 99"), "{}", stderr(&unknown));

    // No backend answers: both detaches are forced after the timeout.
    for handle in ["0", "1"] {
        let out = ok(nbctl(dir, &["detach", &g_text, handle, "--timeout", "0.2"]));
        assert!(out.contains(&format!("detached vif{g}.{handle} (forced")), "{out}");
    }
    let missing = nbctl(dir, &["detach", &g_text, "0"]);
    assert!(!missing.status.success() && stderr(&missing).contains("does not exist"), "{}", stderr(&missing));
    assert!(ok(nbctl(dir, &["list"])).contains("no vifs"));
}

#[test]
fn domain_create_and_destroy_play_the_toolstack() {
    let host = SimHost::start_temp().expect("sim host");
    let xs = host.toolstack();
    let out = ok(nbctl(Some(host.dir()), &["domain", "create", "alice"]));
    let line = out.trim();
    let prefix = format!("export {}={} {}=", simhost::ENV_SIM_DIR, host.dir().display(), simhost::ENV_SIM_TOKEN);
    assert!(line.starts_with(&prefix) && line.len() > prefix.len(), "{line}");
    // The first guest domain of a fresh host is 1; the toolstack's layout and introduction are done.
    assert_eq!(xs.read_string("/local/domain/1/name").expect("name"), "alice");
    assert!(xs.is_domain_introduced(1).expect("introduced?"));
    // The printed token lets a process join as that domain.
    let token: grant::sim::SimToken = line[prefix.len()..].parse().expect("token");
    let guest = simhost::join(host.dir(), grant::sim::Credentials::Guest { token }).expect("join as the guest");
    assert_eq!(guest.domid(), 1);
    drop(guest);

    // The guest's process exited, so the domain is dead; destroy still cleans up xenstore.
    let out = ok(nbctl(Some(host.dir()), &["domain", "destroy", "1"]));
    assert!(out.contains("domain 1"), "{out}");
    assert!(!xs.exists("/local/domain/1").expect("exists"));
    let again = nbctl(Some(host.dir()), &["domain", "destroy", "1"]);
    assert!(!again.status.success() && stderr(&again).contains("no domain 1"), "{}", stderr(&again));
}
