//! The README's main command, run as a user would: `nbctl sim`.

use std::process::Command;

#[test]
fn nbctl_sim_moves_traffic_between_three_guests_and_shuts_down_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .args(["sim", "--guests", "3", "--duration", "1"])
        .env_remove(simhost::ENV_SIM_DIR)
        .output()
        .expect("running nbctl sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nbctl sim failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let header = stdout.lines().find(|l| l.starts_with("VIF")).unwrap_or_else(|| panic!("no table in:\n{stdout}"));
    for column in ["MAC", "TX PKTS", "RX BYTES", "DROPS", "NOTIF/PKT", "TX Mbit/s", "RX kfps", "LOST", "REORD", "DUP"] {
        assert!(header.contains(column), "missing column {column:?} in {header:?}");
    }
    for domid in 1..=3u16 {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("vif{domid}.0 ")))
            .unwrap_or_else(|| panic!("no row for vif{domid}.0 in:\n{stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 15, "{row}");
        assert_eq!(cells[1], format!("00:16:3e:00:00:{domid:02x}"), "{row}");
        let tx_packets: u64 = cells[2].parse().unwrap_or_else(|_| panic!("TX PKTS in {row}"));
        let rx_packets: u64 = cells[4].parse().unwrap_or_else(|_| panic!("RX PKTS in {row}"));
        assert!(tx_packets > 0 && rx_packets > 0, "no traffic through vif{domid}.0: {row}");
    }
    assert!(
        stdout.contains(
            "[host] clean shutdown: daemon exited 0, 3/3 guests exited 0, 3/3 detaches clean, no domain left"
        ),
        "no clean-shutdown line in:\n{stdout}"
    );
}

#[test]
fn nbctl_sim_tcp_with_gso_moves_a_verified_stream() {
    let out = Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .args(["sim", "--tcp", "--gso", "--size", "65000", "--guests", "2", "--duration", "1"])
        .env_remove(simhost::ENV_SIM_DIR)
        .output()
        .expect("running nbctl sim --tcp --gso");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nbctl sim failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("TCP with GSO"), "{stdout}");
    let tcp_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("[tcp] vif")).collect();
    assert_eq!(tcp_lines.len(), 2, "{stdout}");
    for l in tcp_lines {
        assert!(l.contains("(0 corrupt"), "{l}");
        assert!(!l.contains(": 0 of"), "no payload received: {l}");
    }
    assert!(stdout.contains("[host] clean shutdown"), "{stdout}");
}
