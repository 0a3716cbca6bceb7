//! `hexad-bench quickstart` runs to completion, quickly, and cleans up after itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_mins(1);

#[test]
fn quickstart_completes_within_a_minute_and_removes_its_data() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let plot = root.with_extension("svg");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hexad-bench"))
        .args(["quickstart", "--runtime", "1", "--local-dir"])
        .arg(&root)
        .arg("--plot")
        .arg(&plot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("quickstart still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(status.success(), "quickstart failed: {stdout}\n{stderr}");
    let committed: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("committed: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no commit count in: {stdout}"));
    assert!(committed > 0, "{stdout}");
    assert!(stdout.contains("commit latency (us): p50="), "{stdout}");
    let reads: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("read: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no read count in: {stdout}"));
    assert!(reads > 0, "{stdout}");
    assert!(stdout.contains("read latency (us): p50="), "{stdout}");
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    let _ = std::fs::remove_file(&plot);
    assert!(
        stdout.contains(&format!("latency plot: {}", plot.display())),
        "{stdout}"
    );
    assert_eq!(
        svg.matches("<polyline").count(),
        2,
        "one curve per job: {svg}"
    );
    assert!(
        stderr.contains("removed the local cluster's data"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "data left behind in {}",
        root.display()
    );
    println!(
        "quickstart: {committed} commits, {reads} page reads in {:?}",
        started.elapsed()
    );
}
