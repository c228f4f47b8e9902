//! `nbctl set`, `stats`, `attach --<knob>` and `study` through the binary, against a
//! simulated host started by the test and the daemon process `nbctl sim-netback`.

use grant::sim::DomainConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use simhost::SimHost;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn nbctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .env_remove(simhost::ENV_SIM_DIR)
        .env_remove(simhost::ENV_SIM_TOKEN)
        .arg("--sim-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("running nbctl")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ok(out: Output) -> String {
    let (o, e) = text(&out);
    assert!(out.status.success(), "nbctl failed ({}):\n{o}\n{e}", out.status);
    o
}

/// The daemon process; SIGTERMed (and reaped) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn set_stats_and_attach_knobs_through_the_binary() {
    let host = SimHost::start_temp().unwrap();
    let dir = host.dir().to_path_buf();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_nbctl")).arg("--sim-dir").arg(&dir).arg("sim-netback").spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while nbctl(&dir, &["stats"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the daemon never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let guest = host.create_domain("g", DomainConfig::default()).unwrap();
    let d = guest.domid.to_string();
    let out = ok(nbctl(&dir, &["attach", &d, "--tx-drain-max", "8", "--notify-usecs", "20"]));
    assert!(out.contains("tx-drain-max=8"), "{out}");
    let node = format!("/local/domain/0/backend/vif/{d}/0/netback-knobs/tx-drain-max");
    assert_eq!(host.toolstack().read_string(&node).unwrap(), "8");
    let (_, err) = text(&nbctl(&dir, &["attach", &d, "--copy-batch", "0"]));
    assert!(err.contains("copy-batch must be at least 1"), "{err}");

    let out = ok(nbctl(&dir, &["set", "--notify-every", "16", "--busy-poll-usecs", "5"]));
    assert!(out.contains("defaults") && out.contains("notify-every=16") && out.contains("busy-poll-usecs=5"), "{out}");
    let vif = format!("{d}.0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(nbctl(&dir, &["stats"])).contains(&format!("vif{vif}")) {
        assert!(Instant::now() < deadline, "the vif never showed up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ok(nbctl(&dir, &["set", "--vif", &vif, "--req-event-ahead", "4"]));
    assert!(out.contains(&format!("vif{vif}")) && out.contains("req-event-ahead=4"), "{out}");
    for (args, expected) in [
        (&["set", "--tx-drain-max", "0"][..], "tx-drain-max must be at least 1"),
        (&["set", "--req-event-ahead", "300"], "exceeds the ring size"),
        (&["set", "--vif", "99.0", "--mtu", "1400"], "no vif vif99.0"),
        (&["set"], "no knob given"),
    ] {
        let out = nbctl(&dir, args);
        let (_, err) = text(&out);
        assert!(!out.status.success() && err.contains(expected), "{args:?}: {err}");
    }
    let out = ok(nbctl(&dir, &["stats", "--interval", "0.1", "--count", "2"]));
    for needle in ["over 0.", "notifications in", "mean batch", "histogram", "tx_drain", "copy_batch", "512+"] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    assert!(out.contains("notify-every=16") && out.contains("req-event-ahead=4"), "{out}");
    drop(daemon);
}

#[test]
fn a_tiny_study_writes_its_csv_and_plots() {
    let out_dir = std::env::temp_dir().join(format!("nbctl-study-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .args(["study", "--batch", "1,64", "--frame-size", "64", "--duration", "0.3", "--warmup", "0.1", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("[1/2] batch=1 size=64") && stdout.contains("[2/2] batch=64 size=64"), "{stdout}");
    let csv = std::fs::read_to_string(out_dir.join("study.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for col in ["batch", "frame_size", "guests", "frames_per_sec", "gbit_per_sec", "notifications_per_packet"] {
        assert!(header.contains(&col), "{col} missing: {header:?}");
    }
    for col in ["mean_batch", "drops", "loss", "ratio_to_baseline", "notify_every", "req_event_ahead"] {
        assert!(header.contains(&col), "{col} missing: {header:?}");
    }
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        let fps: f64 = cells[header.iter().position(|c| *c == "frames_per_sec").unwrap()].parse().unwrap();
        assert!(fps > 0.0, "{row}");
    }
    for svg in ["throughput.svg", "notifications.svg"] {
        assert!(std::fs::read_to_string(out_dir.join(svg)).unwrap().contains("<svg"), "{svg}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn a_tiny_tcp_study_measures_both_gso_settings() {
    let out_dir = std::env::temp_dir().join(format!("nbctl-study-tcp-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .args(["study", "--gso", "off,on", "--frame-size", "65000", "--batch", "64"])
        .args(["--duration", "0.3", "--warmup", "0.1", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("tcp gso=off") && stdout.contains("tcp gso=on"), "{stdout}");
    let csv = std::fs::read_to_string(out_dir.join("study.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name}: {header:?}"));
    let mut gso_seen = Vec::new();
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        assert_eq!(cells[col("tcp")], "1", "{row}");
        gso_seen.push(cells[col("gso")].to_string());
        let payload: u64 = cells[col("payload_bytes")].parse().unwrap();
        let gbit: f64 = cells[col("payload_gbit_per_sec")].parse().unwrap();
        let baseline: f64 = cells[col("baseline_payload_gbit_per_sec")].parse().unwrap();
        assert!(payload > 0 && gbit > 0.0 && baseline > 0.0, "{row}");
        assert_eq!(cells[col("corrupt")], "0", "{row}");
    }
    assert_eq!(gso_seen, ["0", "1"], "{csv}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
