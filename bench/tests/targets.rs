//! Every target takes the same job options: a node target and the raw file engine run
//! mixed and open-loop jobs, and a fault plan acts on a cluster started by
//! `scripts/cluster.sh`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_hexad-bench");

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BENCH).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One node (this bench binary in its node role) with 2 shards; killed on drop.
struct Node(Child);

impl Node {
    fn start(dir: &Path) -> (Node, u16) {
        // Shard i listens on port + i: both must be free, and outside the ephemeral range
        // (an outgoing connection took port + 1 once).
        let port = hexad_tests::free_ports(2);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "node_id = 1\naz = \"az1\"\ndata_dir = \"{}\"\nbase_port = {port}\nshards = 2\npin_shards = false\n[hot_log]\nfile_bytes = 4194304\nfile_count = 4\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut node = Node(
            Command::new(BENCH)
                .args(["__node", "--config"])
                .arg(&config)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let out = BufReader::new(node.0.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_mins(1);
        for line in out.lines() {
            if line.unwrap().contains(" ready: ") {
                return (node, port);
            }
            assert!(Instant::now() < deadline, "node not ready");
        }
        panic!("node exited before it was ready");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_target_runs_mixed_and_open_loop_jobs() {
    let dir = scratch("node-target");
    let (_node, port) = Node::start(&dir);
    let target = format!("node:127.0.0.1:{port}");
    // randrw, closed loop, two jobs (one per shard), a ramp, per-operation figures.
    let (ok, out, err) = bench(&[
        "write",
        "--target",
        &target,
        "--rw",
        "randrw",
        "--rwmixread",
        "50",
        "--size",
        "1M",
        "--iodepth",
        "4",
        "--numjobs",
        "2",
        "--runtime",
        "1",
        "--ramp_time",
        "1",
        "--output-format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    for op in ["append", "read"] {
        assert!(v["by_op"][op]["ops"].as_u64().unwrap() > 0, "{op}: {out}");
    }
    assert!(
        v["node_log"]["records_per_s"].as_f64().unwrap() > 0.0,
        "{out}"
    );
    assert!(v["rate_iops"].is_null(), "closed loop: {out}");

    // Open loop: exactly rate × runtime operations are scheduled, and all of them run.
    let hlog = dir.join("node.hlog");
    let (ok, out, err) = bench(&[
        "write",
        "--target",
        &target,
        "--rw",
        "randread",
        "--size",
        "512K",
        "--iodepth",
        "8",
        "--runtime",
        "2",
        "--rate_iops",
        "300",
        "--volume-base",
        "5000",
        "--output-format",
        "json",
        "--hdr-log",
        hlog.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["ops"].as_u64(), Some(600), "{out}");
    assert_eq!(v["rate_iops"].as_f64(), Some(300.0), "{out}");
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(
        log.lines().filter(|l| l.contains(",HISTF")).count() >= 1,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_file_target_runs_mixed_and_open_loop_jobs() {
    let dir = scratch("file-target");
    let target = format!("file:{}", dir.join("raw.dat").display());
    let hlog = dir.join("raw.hlog");
    let (ok, out, err) = bench(&[
        "write",
        "--target",
        &target,
        "--size",
        "8M",
        "--bs",
        "4096",
        "--rw",
        "randrw",
        "--rwmixread",
        "70",
        "--iodepth",
        "4",
        "--runtime",
        "2",
        "--rate_iops",
        "500",
        "--output-format",
        "json",
        "--hdr-log",
        hlog.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    // Every scheduled operation runs, and each is a read or a write.
    assert_eq!(v["ops"].as_u64(), Some(1000), "{out}");
    let reads = v["by_op"]["read"]["ops"].as_u64().unwrap();
    let writes = v["by_op"]["write"]["ops"].as_u64().unwrap();
    assert_eq!(reads + writes, 1000, "{out}");
    assert!(reads > writes && writes > 0, "70% reads: {out}");
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(
        log.lines().filter(|l| l.contains(",HISTF")).count() >= 2,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scripts/cluster.sh` with this bench binary as the node program.
fn script(dir: &Path, args: &[&str]) -> String {
    let wrapper = dir.join("node.sh");
    if !wrapper.exists() {
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec {BENCH} __node \"$@\"\n")).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&wrapper)
            .status()
            .unwrap();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("scripts/cluster.sh"))
        .args(args)
        .env("HEXAD_NODE_BIN", &wrapper)
        .env("HEXAD_READY_TIMEOUT_S", "60")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_fault_plan_acts_on_a_cluster_started_by_the_script() {
    let dir = scratch("cluster-faults");
    let cluster = dir.join("cluster.toml");
    let mut text = String::from(
        "[defaults]\nshards = 1\npin_shards = false\n[defaults.hot_log]\nfile_bytes = 4194304\nfile_count = 4\n",
    );
    for id in 1..=6 {
        write!(
            text,
            "[[node]]\nid = {id}\naz = \"az{}\"\naddr = \"127.0.0.1\"\nbase_port = {}\n",
            (id + 1) / 2,
            hexad_tests::free_ports(1)
        )
        .unwrap();
    }
    std::fs::write(&cluster, text).unwrap();
    let data = dir.join("data");
    let data_s = data.to_str().unwrap();
    let out = script(&dir, &["start", data_s, cluster.to_str().unwrap()]);
    assert_eq!(out.matches(" ready: ").count(), 6, "{out}");
    let pid5 = std::fs::read_to_string(data.join("node5.pid")).unwrap();

    let (ok, out, err) = bench(&[
        "write",
        "--target",
        &format!("cluster:{}", cluster.display()),
        "--cluster-dir",
        data_s,
        "--runtime",
        "4",
        "--iodepth",
        "4",
        "--output-format",
        "json",
        "--fault",
        "at=500ms stop node=2; at=1s cont node=2; at=1500ms kill node=5; at=2s restart node=5",
    ]);
    let status = script(&dir, &["status", data_s]);
    let stopped = script(&dir, &["stop", data_s]);
    assert!(ok, "{err}");
    for step in [
        "Stop node 2",
        "Cont node 2",
        "Kill node 5",
        "Restart node 5",
    ] {
        assert!(err.contains(&format!("fault: {step}\n")), "{step}: {err}");
    }
    assert!(json(&out)["ops"].as_u64().unwrap() > 0, "{out}");
    assert!(status.contains("6 of 6 nodes running"), "{status}");
    let new_pid5 = status
        .lines()
        .find_map(|l| l.strip_prefix("node5 running (pid "))
        .and_then(|l| l.split(')').next())
        .unwrap_or_else(|| panic!("{status}"));
    assert_ne!(new_pid5, pid5.trim(), "node 5 is a new process");
    assert_eq!(stopped.matches(" stopped (pid ").count(), 6, "{stopped}");
    let _ = std::fs::remove_dir_all(&dir);
}
