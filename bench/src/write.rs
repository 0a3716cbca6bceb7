//! `hexad-bench write`: closed-loop appends to one node.
//!
//! Each job is one connection that keeps `iodepth` `AppendBatch` requests in flight, each of
//! `batch` records with `bs` payload bytes, chained per job's own segment. Latency is from
//! sending a request to receiving its ack (closed loop: a slow ack delays the next send,
//! so this does not correct for coordinated omission; the open-loop mode is issue #7).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use hexad_client::PAGE_BYTES;
use serde::Serialize;

/// Most jobs one run may have (a job file spaces its jobs' volumes 1000 apart).
pub const MAX_JOBS: usize = 256;

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// Where to write: local (an embedded 6-node cluster started for the run),
    /// cluster:FILE (commits through the quorum client to the cluster in FILE), or
    /// node:HOST:PORT (one node, no quorum; any shard's port).
    #[arg(long, default_value = "local")]
    pub target: String,
    /// With --target local: where the embedded cluster keeps its data (a real disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub local_dir: std::path::PathBuf,
    /// Payload bytes per record (4..=8192; 8192 sends full-page images).
    #[arg(long, default_value_t = 200)]
    pub bs: usize,
    /// Records per `AppendBatch` request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Requests in flight per job (node target) or commits in flight (cluster target).
    #[arg(long, default_value_t = 1)]
    pub iodepth: usize,
    /// Jobs, each with `iodepth` in flight on its own volume (local and cluster targets) or
    /// segment (node target); at most 256.
    #[arg(long, default_value_t = 1)]
    pub numjobs: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub runtime: u64,
    /// First volume id: job j writes volume base+j (node target: the next id from there
    /// whose segment is on job j's shard). Use a fresh base per run.
    #[arg(long, default_value_t = 1000)]
    pub volume_base: u64,
    /// normal or json.
    #[arg(long, default_value = "normal")]
    pub output_format: String,
    /// Targets the run must meet, e.g. 'p99<=2ms,p99.9<=10ms,iops>=20000' (pNN, max: us, ms
    /// or s; iops: operations per second). Any miss exits non-zero, naming each.
    #[arg(long)]
    pub slo: Option<String>,
    /// Open loop: start this many operations per second (at most `iodepth` in flight) and
    /// measure each from its scheduled start, so stalls are not hidden. Cluster target only.
    #[arg(long = "rate_iops")]
    pub rate_iops: Option<f64>,
    /// Seconds of unmeasured warm-up before --runtime (local and cluster targets).
    #[arg(long = "ramp_time", default_value_t = 0)]
    pub ramp_time: u64,
    /// write, randwrite (commits), read or randread (page reads at VDL, after one commit
    /// per page of --size), or randrw (both, see --rwmixread; latency per operation too).
    /// Reads: local and cluster targets.
    #[arg(long, default_value = "write")]
    pub rw: String,
    /// With --rw randrw: percent of operations that are reads.
    #[arg(long, default_value_t = 50)]
    pub rwmixread: u8,
    /// Bytes of pages the job addresses (8 KiB each; K, M, G suffixes), spread over two
    /// PGs (local and cluster targets); with `--target file:PATH`, bytes of the file used.
    #[arg(long, default_value = "512K")]
    pub size: String,
    /// File target: fdatasync after every N writes of each slot (0: never).
    #[arg(long, default_value_t = 0)]
    pub fdatasync: u64,
    /// Write the latency-by-percentile curve to this SVG file (local, cluster and file
    /// targets).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Node faults during the run, e.g. 'at=10s stop node=3; at=20s cont node=3; at=30s
    /// kill node=5; at=40s restart node=5' (local target; cluster target with
    /// --cluster-dir).
    #[arg(long)]
    pub fault: Option<String>,
    /// With --target cluster:FILE and --fault: the directory the cluster was started in
    /// (`scripts/cluster.sh start DIR`), which holds each node's PID file and log.
    #[arg(long)]
    pub cluster_dir: Option<std::path::PathBuf>,
    /// The job's name, for headings, plots and logs (fio's --name).
    #[arg(long, default_value = "job")]
    pub name: String,
    /// Write each measured second's latency histogram to this file in the `HdrHistogram`
    /// interval log format (local and cluster targets).
    #[arg(long = "hdr-log")]
    pub hdr_log: Option<std::path::PathBuf>,
}

/// Runs `load` with the `--fault` plan (if any) applied to the nodes `ids` of the job's
/// cluster, reached through `nodes`.
pub fn with_faults<T>(
    args: &WriteArgs,
    ids: &[u32],
    nodes: impl FnOnce() -> Result<Box<dyn crate::fault::Nodes>>,
    load: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(plan) = &args.fault else {
        return load();
    };
    let steps = crate::fault::parse(plan, ids)?;
    let (stop, faults) = crate::fault::spawn(nodes()?, steps, std::time::Instant::now());
    let result = load();
    drop(stop);
    let applied = faults
        .join()
        .map_err(|_| anyhow::anyhow!("the fault thread panicked"))?;
    let out = result?;
    applied?;
    Ok(out)
}

/// Writes `--plot` if asked, and says where.
pub fn maybe_plot(args: &WriteArgs, hist: &Histogram<u64>) -> Result<()> {
    let Some(path) = &args.plot else {
        return Ok(());
    };
    let title = format!(
        "hexad-bench write --rw {} --target {}",
        args.rw, args.target
    );
    crate::plot::write_svg(path, &title, &[(args.name.clone(), hist)])?;
    eprintln!("latency plot written to {}", path.display());
    Ok(())
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    Write,
    RandWrite,
    Read,
    RandRead,
    /// Random reads and writes, `--rwmixread` percent reads (`--rw randrw`).
    #[serde(rename = "randrw")]
    Mixed,
}

impl Rw {
    pub fn parse(s: &str) -> Result<Rw> {
        Ok(match s {
            "write" => Rw::Write,
            "randwrite" => Rw::RandWrite,
            "read" => Rw::Read,
            "randread" => Rw::RandRead,
            "randrw" => Rw::Mixed,
            "rw" | "readwrite" => {
                bail!("--rw {s}: sequential mixed jobs are not built; use randrw with --rwmixread")
            }
            other => {
                bail!("--rw must be write, randwrite, read, randread or randrw, not {other:?}")
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Rw::Write => "write",
            Rw::RandWrite => "randwrite",
            Rw::Read => "read",
            Rw::RandRead => "randread",
            Rw::Mixed => "randrw",
        }
    }

    pub fn reads(self) -> bool {
        matches!(self, Rw::Read | Rw::RandRead)
    }

    /// Which of `count` pages (or blocks) operation `i` addresses: in order for sequential
    /// jobs, scattered by a fixed hash for random ones.
    pub fn pick(self, i: u64, count: u64) -> u64 {
        match self {
            Rw::Write | Rw::Read => i % count,
            Rw::RandWrite | Rw::RandRead | Rw::Mixed => {
                let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                x ^= x >> 29;
                x % count
            }
        }
    }

    /// Whether operation `i` is a read; a randrw job reads `mix_read` percent of the time.
    pub fn is_read(self, i: u64, mix_read: u8) -> bool {
        match self {
            Rw::Mixed => (i.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32) % 100 < u64::from(mix_read),
            rw => rw.reads(),
        }
    }

    /// Whether the job reads at all (its pages are written once first).
    pub fn any_reads(self) -> bool {
        matches!(self, Rw::Read | Rw::RandRead | Rw::Mixed)
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--size {s:?}: expected a byte count such as 64M"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("--size {s:?} is too large"))?;
    if bytes < PAGE_BYTES as u64 {
        bail!("--size {s:?} is less than one 8 KiB page");
    }
    Ok(bytes)
}

/// Checks `--output-format` and parses `--slo`; every target takes both.
fn output_and_slo(args: &WriteArgs) -> Result<Option<Vec<crate::slo::Target>>> {
    if !matches!(args.output_format.as_str(), "normal" | "json") {
        bail!(
            "--output-format must be normal or json, not {:?}",
            args.output_format
        );
    }
    args.slo
        .as_deref()
        .map(crate::slo::parse)
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// Checks the options that do not depend on the target being up (also for job files,
/// before any job runs). The file target checks its own.
pub fn validate(args: &WriteArgs) -> Result<Option<Vec<crate::slo::Target>>> {
    if args.target.starts_with("file:") {
        return Ok(None);
    }
    if args.fdatasync > 0 {
        bail!("--fdatasync is for the file target; hexad nodes sync before they acknowledge");
    }
    if !(4..=PAGE_BYTES).contains(&args.bs) {
        bail!("--bs {} must be 4..={PAGE_BYTES}", args.bs);
    }
    if args.batch == 0 || args.iodepth == 0 || args.numjobs == 0 || args.runtime == 0 {
        bail!("--batch, --iodepth, --numjobs and --runtime must be at least 1");
    }
    if args.numjobs > MAX_JOBS {
        bail!("--numjobs {} is more than {MAX_JOBS}", args.numjobs);
    }
    if args.batch > 1 && !args.target.starts_with("node:") {
        bail!("--batch is for the node target (the quorum client batches by itself)");
    }
    let slo = output_and_slo(args)?;
    if args.rate_iops.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate_iops must be a positive number of operations per second");
    }
    Rw::parse(&args.rw)?;
    parse_size(&args.size)?;
    if let Some(plan) = &args.fault {
        if args.target.starts_with("node:") {
            bail!("--fault is for the local and cluster targets (a node target is one node)");
        }
        if let Some(path) = args.target.strip_prefix("cluster:") {
            if args.cluster_dir.is_none() {
                bail!("--fault with --target cluster:FILE needs --cluster-dir DIR (where scripts/cluster.sh started it)");
            }
            let (map, _) = crate::quorum::load_cluster(std::path::Path::new(path))?;
            crate::fault::parse(plan, &node_ids(&map))?;
        } else {
            crate::fault::parse(plan, &crate::local::node_ids())?;
        }
    } else if args.cluster_dir.is_some() {
        bail!("--cluster-dir is for --fault with a cluster target");
    }
    if args.rwmixread > 100 {
        bail!("--rwmixread {} must be 0..=100", args.rwmixread);
    }
    let target_ok = args.target == "local"
        || args.target.starts_with("cluster:")
        || args.target.starts_with("node:");
    if !target_ok {
        bail!(
            "--target {:?}: use local, cluster:FILE, node:HOST:PORT or file:PATH",
            args.target
        );
    }
    Ok(slo)
}

/// Runs one job and writes its `--plot` if asked.
pub fn run(args: &WriteArgs) -> Result<()> {
    let hist = run_job(args)?;
    maybe_plot(args, &hist)
}

/// Runs one job on its target; returns its latency histogram.
pub fn run_job(args: &WriteArgs) -> Result<Histogram<u64>> {
    if let Some(path) = args.target.strip_prefix("file:") {
        return run_file(args, std::path::Path::new(path));
    }
    let slo = validate(args)?;
    if let Some(path) = args.target.strip_prefix("cluster:") {
        let (map, shards) = crate::quorum::load_cluster(std::path::Path::new(path))?;
        let ids = node_ids(&map);
        let nodes = || -> Result<Box<dyn crate::fault::Nodes>> {
            let dir = args.cluster_dir.as_deref().context("--cluster-dir")?;
            Ok(Box::new(crate::fault::ScriptNodes::new(dir, &ids)?))
        };
        return with_faults(args, &ids, nodes, || {
            crate::quorum::run_on(args, map.clone(), shards, None, slo.as_deref())
        });
    }
    if let Some(hostport) = args.target.strip_prefix("node:") {
        return crate::node::run(args, hostport, slo.as_deref());
    }
    let cluster = crate::local::LocalCluster::start(&args.local_dir)?;
    run_on_local(args, &cluster, slo.as_deref())
}

/// Runs one job on an embedded cluster already started, with its fault plan.
pub fn run_on_local(
    args: &WriteArgs,
    cluster: &crate::local::LocalCluster,
    slo: Option<&[crate::slo::Target]>,
) -> Result<Histogram<u64>> {
    let nodes = || -> Result<Box<dyn crate::fault::Nodes>> { Ok(Box::new(cluster.handle())) };
    with_faults(args, &crate::local::node_ids(), nodes, || {
        crate::quorum::run_on(args, cluster.map.clone(), 1, Some(cluster.cpu()), slo)
    })
}

fn node_ids(map: &hexad_client::placement::ClusterMap) -> Vec<u32> {
    map.nodes().map(|n| n.id).collect()
}

/// `--target file:PATH`: the raw `io_uring` engine (`raw.rs`).
fn run_file(args: &WriteArgs, path: &std::path::Path) -> Result<Histogram<u64>> {
    if args.iodepth == 0 || args.runtime == 0 || args.numjobs != 1 || args.batch != 1 {
        bail!("the file target takes --iodepth ≥ 1, --runtime ≥ 1, one job and no --batch");
    }
    if args.fault.is_some() {
        bail!("--fault is for the local and cluster targets (a file has no nodes)");
    }
    if args.rwmixread > 100 {
        bail!("--rwmixread {} must be 0..=100", args.rwmixread);
    }
    if args.rate_iops.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate_iops must be a positive number of operations per second");
    }
    let slo = output_and_slo(args)?;
    let rw = Rw::parse(&args.rw)?;
    let job = crate::raw::RawJob {
        rw,
        mix_read: args.rwmixread,
        bs: args.bs,
        iodepth: args.iodepth,
        size: parse_size(&args.size)?,
        fdatasync: args.fdatasync,
        runtime: Duration::from_secs(args.runtime),
        ramp: Duration::from_secs(args.ramp_time),
        rate_iops: args.rate_iops,
        quiet: args.output_format == "json",
    };
    let (stats, loaded) = crate::raw::run(path, &job)?;
    let shape = crate::report::Shape {
        path: "raw io_uring, O_DIRECT",
        rw,
        pages: job.size / args.bs as u64,
        batch: None,
        bytes_per_op: args.bs,
        kinds: ["write", "read"],
    };
    let stats = crate::report::TargetStats::File(stats);
    crate::report::finish(args, &shape, loaded, stats, slo.as_deref())
}

/// `hexad-bench quickstart`: a write job and a read job on an embedded local cluster.
pub fn quickstart(
    runtime: u64,
    local_dir: std::path::PathBuf,
    plot: &std::path::Path,
) -> Result<()> {
    let args = WriteArgs {
        target: "local".into(),
        local_dir,
        bs: 200,
        batch: 1,
        iodepth: 16,
        numjobs: 1,
        runtime,
        volume_base: 1,
        output_format: "normal".into(),
        slo: None,
        rate_iops: None,
        ramp_time: 0,
        rw: "write".into(),
        size: "512K".into(),
        fdatasync: 0,
        plot: None,
        hdr_log: None,
        name: "commits".into(),
        rwmixread: 50,
        fault: None,
        cluster_dir: None,
    };
    let cluster = crate::local::LocalCluster::start(&args.local_dir)?;
    println!("== job 1: commits (write)");
    let writes = crate::quorum::run_on(&args, cluster.map.clone(), 1, Some(cluster.cpu()), None)?;
    // A fresh volume of 64 pages, each written once before the reads.
    let read = WriteArgs {
        rw: "randread".into(),
        name: "page-reads".into(),
        volume_base: 2,
        ..args
    };
    println!("== job 2: page reads at VDL (randread), one record per page");
    let reads = crate::quorum::run_on(&read, cluster.map.clone(), 1, Some(cluster.cpu()), None)?;
    crate::plot::write_svg(
        plot,
        "hexad-bench quickstart: 6 local nodes, 16 in flight",
        &[
            ("commit (write)".into(), &writes),
            ("page read (randread)".into(), &reads),
        ],
    )?;
    println!("latency plot: {}", plot.display());
    println!("quickstart: done");
    Ok(())
}
