//! The README's main command, run as a user would: `nbctl sim`.

use std::process::Command;

#[test]
fn nbctl_sim_moves_a_frame_through_a_grant_and_reports_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_nbctl")).arg("sim").output().expect("running nbctl sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nbctl sim failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for expected in [
        "frame GNTST 0 (okay) (1514 bytes)",
        "bogus gref GNTST -3",
        "write into read-only grant GNTST -1",
        "segment crossing the page end: GNTST -10",
        "notified by the backend",
        "@releaseDomain fired and the domain is gone",
        "OK: a frame crossed from guest 1 to dom0",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}
