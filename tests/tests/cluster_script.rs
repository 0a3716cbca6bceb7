//! `scripts/cluster.sh`: starts 6 nodes from a cluster file, reports status, and `stop`
//! signals only the processes it started.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use hexad_tests::{free_ports, fresh_dir};

fn script(args: &[&str]) -> (bool, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("scripts/cluster.sh"))
        .args(args)
        .env("HEXAD_NODE_BIN", env!("CARGO_BIN_EXE_hexad-test-node"))
        .env("HEXAD_READY_TIMEOUT_S", "30")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn start_status_stop_only_its_own_pids() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "cluster");
    let cluster = dir.join("cluster.toml");
    let mut text = String::from(
        "[defaults]\nshards = 1\npin_shards = false\n[defaults.hot_log]\nfile_bytes = 2097152\nfile_count = 2\n",
    );
    for id in 1..=6 {
        let az = (id + 1) / 2;
        writeln!(
            text,
            "[[node]]
id = {id}
az = \"az{az}\"
addr = \"127.0.0.1\"
base_port = {}",
            free_ports(1)
        )
        .unwrap();
    }
    std::fs::write(&cluster, text).unwrap();
    let data = dir.join("data");
    let data_s = data.to_str().unwrap();

    let (ok, out) = script(&["start", data_s, cluster.to_str().unwrap()]);
    assert!(ok, "start failed: {out}");
    assert_eq!(out.matches(" ready: ").count(), 6, "{out}");
    let (ok, out) = script(&["status", data_s]);
    assert!(ok && out.contains("6 of 6 nodes running"), "{out}");

    // A pid file naming someone else's process: stop must leave it alone.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(data.join("node9.pid"), stranger.id().to_string()).unwrap();
    let (ok, out) = script(&["stop", data_s]);
    assert!(ok, "{out}");
    assert_eq!(out.matches(" stopped ").count(), 6, "{out}");
    assert!(out.contains("node9 not running"), "{out}");
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "stop killed a process it did not start"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
    let (ok, out) = script(&["status", data_s]);
    assert!(!ok, "status should fail with nothing running: {out}");
}
