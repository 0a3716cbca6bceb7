//! hexad-bench's command line: contradictory or malformed options are clear errors, and
//! `--output-format json` prints one complete JSON document.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hexad-bench"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_options_are_clear_errors() {
    for (args, needle) in [
        (
            &["write", "--target", "bogus:x"][..],
            "use local, cluster:FILE, node:HOST:PORT or file:PATH",
        ),
        (&["write", "--bs", "9000"][..], "--bs 9000 must be 4..=8192"),
        (&["write", "--iodepth", "0"][..], "must be at least 1"),
        (
            &["write", "--numjobs", "300"][..],
            "--numjobs 300 is more than 256",
        ),
        (
            &["write", "--batch", "4"][..],
            "--batch is for the node target",
        ),
        (
            &["write", "--output-format", "xml"][..],
            "must be normal or json",
        ),
        (&["write", "--slo", "p99<2ms"][..], "expected METRIC<=VALUE"),
        (&["write", "--rate_iops=0"][..], "positive number"),
        (
            &["write", "--cluster-dir", "/tmp"][..],
            "--cluster-dir is for --fault with a cluster target",
        ),
        (
            &[
                "write",
                "--target",
                &format!(
                    "cluster:{}/../config/cluster.toml",
                    env!("CARGO_MANIFEST_DIR")
                ),
                "--fault",
                "at=1s stop node=1",
            ][..],
            "needs --cluster-dir DIR",
        ),
        (
            &[
                "write",
                "--target",
                "file:/tmp/x",
                "--fault",
                "at=1s stop node=1",
            ][..],
            "a file has no nodes",
        ),
        (
            &["write", "--target", "cluster:/nonexistent.toml"][..],
            "reading /nonexistent.toml",
        ),
        (&["write", "--no-such-flag"][..], "unexpected argument"),
        (
            &["recover", "--crash", "sometimes"][..],
            "--crash must be in-flight or after-durable",
        ),
        (
            &["recover", "--pgs", "0"][..],
            "--pgs values must be 1..=13108",
        ),
        (&["recover", "--records", "0"][..], "must be positive"),
        (&["pages", "--pages", "0"][..], "must be positive"),
        (
            &["write", "--fdatasync", "1"][..],
            "--fdatasync is for the file target",
        ),
        (&["write", "--rw", "rw"][..], "use randrw with --rwmixread"),
        (
            &["write", "--fault", "at=1s pause node=1"][..],
            "unknown word \"pause\"",
        ),
        (
            &[
                "write",
                "--target",
                "node:127.0.0.1:1",
                "--fault",
                "at=1s stop node=1",
            ][..],
            "a node target is one node",
        ),
        (
            &["write", "--rw", "trim"][..],
            "--rw must be write, randwrite, read, randread or randrw",
        ),
        (
            &["write", "--rwmixread", "101"][..],
            "--rwmixread 101 must be 0..=100",
        ),
        (&["write", "--size", "4K"][..], "less than one 8 KiB page"),
        (&["write", "--size", "lots"][..], "expected a byte count"),
        (
            &["pages", "--target", "file:/tmp/x"][..],
            "--target must be local or cluster:FILE for pages",
        ),
        (
            &["recover", "--target", "node:127.0.0.1:1"][..],
            "--target must be local or cluster:FILE for recover",
        ),
    ] {
        let (ok, _, err) = bench(args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
}

#[test]
fn json_output_is_one_complete_document() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hlog = dir.with_extension("hlog");
    let (ok, out, err) = bench(&[
        "write",
        "--target",
        "local",
        "--local-dir",
        dir.to_str().unwrap(),
        "--runtime",
        "1",
        "--iodepth",
        "4",
        "--numjobs",
        "2",
        "--output-format",
        "json",
        "--hdr-log",
        hlog.to_str().unwrap(),
        "--fault",
        "at=300ms stop node=2; at=600ms cont node=2",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("fault: Stop node 2") && err.contains("fault: Cont node 2"),
        "the fault plan ran: {err}"
    );
    let log = std::fs::read_to_string(&hlog).unwrap_or_default();
    let _ = std::fs::remove_file(&hlog);
    assert!(
        log.contains("#[StartTime: "),
        "not an HdrHistogram interval log: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("0.") && l.contains(",HISTF")),
        "no interval in: {log}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    for key in [
        "name",
        "target",
        "rw",
        "bs",
        "iodepth",
        "numjobs",
        "rate_iops",
        "runtime_s",
        "ops",
        "ops_per_s",
        "mb_per_s",
        "errors",
        "latency_us_p50",
        "latency_us_p90",
        "latency_us_p99",
        "latency_us_p999",
        "latency_us_p9999",
        "latency_us_max",
    ] {
        assert!(v.get(key).is_some(), "JSON lacks {key}: {out}");
    }
    assert!(v["ops"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(v["numjobs"].as_u64(), Some(2), "{out}");
    assert!(v["latency_us_p50"].as_u64().unwrap() <= v["latency_us_p99"].as_u64().unwrap());
    assert!(
        !out.contains("commits/s\n["),
        "progress lines must not mix into the JSON"
    );
}

#[test]
fn the_raw_file_engine_runs_a_synced_write_job_and_reports_json() {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("raw-{}.dat", std::process::id()));
    let target = format!("file:{}", file.display());
    let (ok, out, err) = bench(&[
        "write",
        "--target",
        &target,
        "--size",
        "8M",
        "--bs",
        "4096",
        "--iodepth",
        "2",
        "--fdatasync",
        "1",
        "--runtime",
        "1",
        "--output-format",
        "json",
    ]);
    let len = std::fs::metadata(&file).map(|m| m.len());
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{err}");
    assert_eq!(len.unwrap(), 8 << 20, "the file is laid out to --size");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let ops = v["ops"].as_u64().unwrap();
    assert!(ops > 0, "{out}");
    // Every write of every slot is followed by an fdatasync.
    assert!(v["file"]["syncs"].as_u64().unwrap() >= ops, "{out}");
    assert!(v["latency_us_p50"].as_u64().unwrap() <= v["latency_us_p99"].as_u64().unwrap());
    let (ok, _, err) = bench(&["write", "--target", &target, "--bs", "1000"]);
    let _ = std::fs::remove_file(&file);
    assert!(!ok && err.contains("must be a multiple of 4096"), "{err}");
}

fn job_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_job_files_are_clear_errors_before_anything_runs() {
    for (name, text, needle) in [
        (
            "unknown-key",
            "[[job]]\nbogus = 1\n",
            "job job1: error: unexpected argument '--bogus",
        ),
        ("no-jobs", "[global]\nruntime = 1\n", "no [[job]]"),
        (
            "bad-bs",
            "[global]\nbs = 9000\n[[job]]\nname = \"a\"\n",
            "job a: --bs 9000 must be 4..=8192",
        ),
        (
            "bad-section",
            "[[jobs]]\nrw = \"write\"\n",
            "unknown field `jobs`",
        ),
        (
            "plot-in-job",
            "[[job]]\nplot = \"x.svg\"\n",
            "plot belongs in [global]",
        ),
        (
            "second-job-bad",
            "[[job]]\nrw = \"write\"\n[[job]]\nname = \"r\"\nrw = \"readwrite\"\n",
            "job r: --rw readwrite: sequential mixed jobs are not built",
        ),
    ] {
        let path = job_file(name, text);
        let (ok, _, err) = bench(&[path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(!ok, "{name} should fail");
        assert!(
            err.contains(needle),
            "{name}: expected {needle:?} in: {err}"
        );
        assert!(
            !err.contains("starting a local cluster"),
            "{name}: checked too late: {err}"
        );
    }
}

#[test]
fn a_job_file_runs_its_jobs_in_order_and_plots_them_together() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.with_extension("svg");
    let path = job_file(
        "two-jobs",
        &format!(
            "[global]\ntarget = \"local\"\nlocal_dir = \"{}\"\nruntime = 1\nplot = \"{}\"\n\
             [[job]]\nname = \"w\"\nrw = \"randwrite\"\niodepth = 4\n\
             [[job]]\nname = \"r\"\nrw = \"randread\"\niodepth = 4\nsize = \"1M\"\n",
            dir.display(),
            plot.display()
        ),
    );
    let (ok, out, err) = bench(&[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    let _ = std::fs::remove_file(&plot);
    assert!(ok, "{err}");
    let w = out.find("== job w").expect("job w ran");
    let r = out.find("== job r").expect("job r ran");
    assert!(w < r, "jobs run in file order: {out}");
    assert!(
        out.contains("committed: ") && out.contains("read: "),
        "{out}"
    );
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
}
