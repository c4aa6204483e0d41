//! `stratus object ring …`: the ring file is created, devices added, rebalanced, shown, and bad input refused.

use std::process::Command;

fn ring(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["object", "ring"])
        .args(args)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .env("STRATUS_LOG__LEVEL", "warn")
        .output()
        .expect("stratus runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn create_add_rebalance_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out) = ring(d, &["create", "8", "3", "1"]);
    assert!(ok, "{out}");
    assert!(d.join("rings/object.ring.json").exists());
    let (ok, out) = ring(d, &["create", "8", "3", "1"]);
    assert!(!ok && out.contains("--force"), "an existing ring is kept: {out}");

    let (ok, out) = ring(d, &["add", "r1z1-127.0.0.1:6200/d1", "100", "r1z2-127.0.0.1:6200/d2", "100"]);
    assert!(ok, "{out}");
    assert!(out.contains("Device d0 r1z1-127.0.0.1:6200/d1 with weight 100 added") && out.contains("Device d1"), "{out}");
    let (ok, out) = ring(d, &["rebalance"]);
    assert!(!ok && out.contains("3 replicas need at least as many devices"), "{out}");

    let (ok, out) = ring(d, &["add", "r1z3-127.0.0.1:6200/d3", "100"]);
    assert!(ok, "{out}");
    let (ok, out) = ring(d, &["rebalance"]);
    assert!(ok && out.contains("Reassigned 768 (100.00%) partitions. Balance is now 0.00."), "{out}");
    let (ok, out) = ring(d, &["rebalance"]);
    assert!(ok && out.contains("No partitions reassigned. Balance is 0.00."), "{out}");

    // A fourth device in a new zone takes its quarter; nothing else moves.
    ring(d, &["add", "r1z4-127.0.0.1:6200/d4", "100"]);
    let (ok, out) = ring(d, &["rebalance"]);
    assert!(ok && out.contains("Reassigned 192 (25.00%) partitions."), "{out}");
    let (ok, out) = ring(d, &["show"]);
    assert!(ok, "{out}");
    assert!(out.contains("256 partitions, 3 replicas, 1 regions, 4 zones, 4 devices, 0.00 balance"), "{out}");
    assert!(out.contains("build version 2"), "{out}");
    assert!(out.lines().filter(|l| l.contains("127.0.0.1:6200") && l.trim_end().ends_with("192")).count() == 4, "{out}");

    let (ok, out) = ring(d, &["set-weight", "/d4", "300"]);
    assert!(ok && out.contains("Weight of 1 device(s) set to 300"), "{out}");
    let (ok, out) = ring(d, &["remove", "d0"]);
    assert!(ok, "{out}");
    let (ok, out) = ring(d, &["show"]);
    assert!(ok && out.contains("(removing)"), "{out}");

    for bad in [
        vec!["add", "r1z1-127.0.0.1/d9", "1"],
        vec!["add", "r1z5-127.0.0.1:6200/d9", "heavy"],
        vec!["add", "r1z5-127.0.0.1:6200/d9"],
        vec!["remove", "/nothing"],
        vec!["set-weight", "/d2", "-1"],
        vec!["create", "40", "1", "1", "--force"],
    ] {
        let (ok, out) = ring(d, &bad);
        assert!(!ok, "{bad:?} must fail: {out}");
    }
    let (ok, out) = ring(d, &["show", "--policy", "5"]);
    assert!(!ok && out.contains("no storage policy has index 5"), "{out}");
    let (ok, out) = ring(&d.join("elsewhere"), &["show"]);
    assert!(!ok && out.contains("create one first"), "{out}");
}
