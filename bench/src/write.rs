//! `hexad-bench write`: closed-loop appends to one node.
//!
//! Each job is one connection that keeps `iodepth` `AppendBatch` requests in flight, each of
//! `batch` records with `bs` payload bytes, chained per job's own segment. Latency is from
//! sending a request to receiving its ack (closed loop: a slow ack delays the next send,
//! so this does not correct for coordinated omission; the open-loop mode is issue #7).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use hexad_client::blocking::Connection;
use hexad_client::placement::segment_shard;
use hexad_client::wire::{Message, NodeStats, Op, Record};
use hexad_client::{Lsn, MembershipEpoch, PageNo, PgIndex, VolumeEpoch, VolumeId, PAGE_BYTES};
use serde::Serialize;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PG: PgIndex = PgIndex(0);

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
    /// Jobs: connections, each to its own segment.
    #[arg(long, default_value_t = 1)]
    pub numjobs: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub runtime: u64,
    /// First volume id; job j writes volume base+j (use a fresh base per run).
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
    /// kill node=5; at=40s restart node=5' (local target).
    #[arg(long)]
    pub fault: Option<String>,
    /// The job's name, for headings, plots and logs (fio's --name).
    #[arg(long, default_value = "job")]
    pub name: String,
    /// Write each measured second's latency histogram to this file in the `HdrHistogram`
    /// interval log format (local and cluster targets).
    #[arg(long = "hdr-log")]
    pub hdr_log: Option<std::path::PathBuf>,
}

/// Runs `load` with the `--fault` plan (if any) applied to the local cluster's nodes.
pub fn with_faults<T>(
    args: &WriteArgs,
    cluster: &crate::local::LocalCluster,
    load: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(plan) = &args.fault else {
        return load();
    };
    let nodes = cluster.handle();
    let steps = crate::fault::parse(plan, nodes.node_count())?;
    let (stop, faults) = crate::fault::spawn(nodes, steps, std::time::Instant::now());
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

    pub fn reads(self) -> bool {
        matches!(self, Rw::Read | Rw::RandRead)
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

#[derive(Debug, Serialize)]
struct Summary {
    pub target: String,
    pub bs: usize,
    pub batch: usize,
    pub iodepth: usize,
    pub numjobs: usize,
    runtime_s: f64,
    acked_records: u64,
    records_per_s: f64,
    requests_per_s: f64,
    record_mb_per_s: f64,
    latency_us_p50: u64,
    latency_us_p90: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
    log_syncs_per_s: f64,
    records_per_sync: f64,
    requests_per_sync: f64,
    log_mb_per_s: f64,
}

struct Job {
    addr: SocketAddr,
    volume: VolumeId,
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
    let slo = output_and_slo(args)?;
    if args.rate_iops.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate_iops must be a positive number of operations per second");
    }
    Rw::parse(&args.rw)?;
    parse_size(&args.size)?;
    if let Some(plan) = &args.fault {
        if args.target != "local" {
            bail!(
                "--fault is supported for the local target so far (its nodes are this program's children)"
            );
        }
        crate::fault::parse(plan, crate::local::NODES)?;
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

pub fn run(args: &WriteArgs) -> Result<()> {
    if let Some(path) = args.target.strip_prefix("file:") {
        return run_file(args, std::path::Path::new(path));
    }
    let slo = validate(args)?;
    let rw = Rw::parse(&args.rw)?;
    if let Some(path) = args.target.strip_prefix("cluster:") {
        return crate::quorum::run(args, std::path::Path::new(path), slo.as_deref());
    }
    if args.target == "local" {
        let cluster = crate::local::LocalCluster::start(&args.local_dir)?;
        let hist = with_faults(args, &cluster, || {
            crate::quorum::run_on(args, cluster.map.clone(), 1, slo.as_deref())
        })?;
        return maybe_plot(args, &hist);
    }

    if rw != Rw::Write {
        bail!(
            "--rw {} is supported for local and cluster targets; a node target takes appends",
            args.rw
        );
    }
    if args.plot.is_some() {
        bail!("--plot is supported for local, cluster and file targets so far");
    }
    if args.hdr_log.is_some() {
        bail!("--hdr-log is supported for local and cluster targets so far");
    }
    if args.ramp_time > 0 {
        bail!(
            "--ramp_time is supported for local and cluster targets so far, not {:?}",
            args.target
        );
    }
    if args.rate_iops.is_some() {
        bail!(
            "--rate_iops (open loop) is supported for local and cluster targets so far, not {:?}",
            args.target
        );
    }
    let Some(hostport) = args.target.strip_prefix("node:") else {
        bail!(
            "--target {:?}: use local, cluster:FILE, node:HOST:PORT or file:PATH",
            args.target
        );
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to nothing"))?;
    let mut hello =
        Connection::connect(addr, IO_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    let Message::HelloOk { shard_ports, .. } = hello.hello()? else {
        unreachable!("hello checks the reply")
    };
    let shard_addrs: Vec<SocketAddr> = shard_ports
        .iter()
        .map(|p| SocketAddr::new(addr.ip(), *p))
        .collect();
    let shards = shard_addrs.len() as u16;

    // Job j writes its own segment, on shard j % shards, through that shard's port.
    let mut jobs = Vec::new();
    let mut volume = args.volume_base;
    for j in 0..args.numjobs {
        let shard = (j % shard_addrs.len()) as u16;
        while segment_shard(VolumeId(volume), PG, shards).0 != shard {
            volume += 1;
        }
        jobs.push(Job {
            addr: shard_addrs[usize::from(shard)],
            volume: VolumeId(volume),
        });
        volume += 1;
    }

    let before = node_stats(&shard_addrs)?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (stop, acked) = (stop.clone(), acked.clone());
            let (bs, batch, depth) = (args.bs, args.batch, args.iodepth);
            std::thread::spawn(move || run_job(&job, bs, batch, depth, &stop, &acked))
        })
        .collect();
    let deadline = started + Duration::from_secs(args.runtime);
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
        let now = acked.load(Ordering::Relaxed);
        let dt = last.0.elapsed().as_secs_f64();
        if args.output_format == "normal" {
            eprintln!(
                "[{:>4.0}s] {:>9.0} records/s  {:>7.1} MB/s",
                started.elapsed().as_secs_f64(),
                (now - last.1) as f64 / dt,
                (now - last.1) as f64 * (args.bs + 48) as f64 / dt / 1e6
            );
        }
        last = (Instant::now(), now);
    }
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut requests = 0u64;
    for t in threads {
        let (h, n) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a job thread panicked"))??;
        hist.add(&h).expect("histograms have the same bounds");
        requests += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = node_stats(&shard_addrs)?;
    let records = acked.load(Ordering::Relaxed);
    let syncs = after.log_syncs - before.log_syncs;
    let summary = Summary {
        target: args.target.clone(),
        bs: args.bs,
        batch: args.batch,
        iodepth: args.iodepth,
        numjobs: args.numjobs,
        runtime_s: elapsed,
        acked_records: records,
        records_per_s: records as f64 / elapsed,
        requests_per_s: requests as f64 / elapsed,
        record_mb_per_s: records as f64 * (args.bs + 48) as f64 / elapsed / 1e6,
        latency_us_p50: hist.value_at_quantile(0.5),
        latency_us_p90: hist.value_at_quantile(0.9),
        latency_us_p99: hist.value_at_quantile(0.99),
        latency_us_p999: hist.value_at_quantile(0.999),
        latency_us_max: hist.max(),
        log_syncs_per_s: syncs as f64 / elapsed,
        records_per_sync: (after.records_appended - before.records_appended) as f64
            / syncs.max(1) as f64,
        requests_per_sync: (after.batches_acked - before.batches_acked) as f64
            / syncs.max(1) as f64,
        log_mb_per_s: (after.log_bytes_written - before.log_bytes_written) as f64 / elapsed / 1e6,
    };
    if args.output_format == "json" {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    match slo {
        Some(targets) => crate::slo::check(
            &targets,
            &crate::slo::Outcome {
                latency_us: &hist,
                iops: summary.records_per_s,
            },
        ),
        None => Ok(()),
    }
}

fn print_summary(s: &Summary) {
    println!(
        "write: bs={} batch={} iodepth={} numjobs={} target={} ({:.1}s, closed loop)",
        s.bs, s.batch, s.iodepth, s.numjobs, s.target, s.runtime_s
    );
    println!(
        "  acked: {} records, {:.0} records/s, {:.0} requests/s, {:.1} MB/s of records",
        s.acked_records, s.records_per_s, s.requests_per_s, s.record_mb_per_s
    );
    println!(
        "  ack latency (us): p50={} p90={} p99={} p99.9={} max={}",
        s.latency_us_p50, s.latency_us_p90, s.latency_us_p99, s.latency_us_p999, s.latency_us_max
    );
    println!(
        "  node log: {:.0} syncs/s, {:.1} records/sync, {:.2} requests/sync, {:.1} MB/s written",
        s.log_syncs_per_s, s.records_per_sync, s.requests_per_sync, s.log_mb_per_s
    );
}

fn node_stats(shards: &[SocketAddr]) -> Result<NodeStats> {
    let mut total = NodeStats::default();
    for addr in shards {
        let mut c = Connection::connect(*addr, IO_TIMEOUT)?;
        match c.call(&Message::GetStats)? {
            Message::Stats(s) => {
                total.records_appended += s.records_appended;
                total.batches_acked += s.batches_acked;
                total.log_syncs += s.log_syncs;
                total.log_bytes_written += s.log_bytes_written;
            }
            other => bail!("GetStats from {addr}: {other:?}"),
        }
    }
    Ok(total)
}

fn record(lsn: u64, bs: usize) -> Record {
    let page = PageNo(PG.first_page().0 + lsn % 4096);
    if bs == PAGE_BYTES {
        return Record::new(
            Lsn(lsn),
            Lsn(lsn - 1),
            Lsn(0),
            page,
            Op::PageImage,
            true,
            &[lsn as u8; PAGE_BYTES],
        );
    }
    let mut payload = vec![lsn as u8; bs];
    payload[..4].copy_from_slice(&0u32.to_le_bytes());
    Record::new(
        Lsn(lsn),
        Lsn(lsn - 1),
        Lsn(0),
        page,
        Op::WriteBytes,
        true,
        &payload,
    )
}

/// One job: keeps `depth` requests in flight until `stop`; returns its latency histogram
/// (microseconds) and the number of requests acknowledged.
fn run_job(
    job: &Job,
    bs: usize,
    batch: usize,
    depth: usize,
    stop: &AtomicBool,
    acked: &AtomicU64,
) -> Result<(Histogram<u64>, u64)> {
    let mut conn = Connection::connect(job.addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {}", job.addr))?;
    // Continue the segment's chain after whatever an earlier run left there.
    let mut next = match conn.call(&Message::GetSegmentState {
        volume: job.volume,
        pg: PG,
    })? {
        Message::SegmentState { highest_lsn, .. } => highest_lsn.0 + 1,
        _ => 1,
    };
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut done = 0u64;
    loop {
        while in_flight.len() < depth && !stop.load(Ordering::Relaxed) {
            let records = (next..next + batch as u64).map(|l| record(l, bs)).collect();
            next += batch as u64;
            let msg = Message::AppendBatch {
                volume: job.volume,
                pg: PG,
                volume_epoch: VolumeEpoch(1),
                membership_epoch: MembershipEpoch(1),
                records,
            };
            let id = conn.send(&msg)?;
            in_flight.insert(id, Instant::now());
        }
        if in_flight.is_empty() {
            return Ok((hist, done));
        }
        let (id, reply) = conn.recv()?;
        let sent = in_flight
            .remove(&id)
            .context("reply to a request not in flight")?;
        match reply {
            Message::AppendAck { .. } => {
                hist.record(sent.elapsed().as_micros() as u64)
                    .expect("latency within bounds");
                acked.fetch_add(batch as u64, Ordering::Relaxed);
                done += 1;
            }
            Message::Error { code, message, .. } => {
                bail!("node refused a batch: {code:?}: {message}")
            }
            other => bail!("unexpected reply {other:?}"),
        }
    }
}

/// `--target file:PATH`: the raw `io_uring` engine (`raw.rs`).
fn run_file(args: &WriteArgs, path: &std::path::Path) -> Result<()> {
    if args.iodepth == 0 || args.runtime == 0 || args.numjobs != 1 || args.batch != 1 {
        bail!("the file target takes --iodepth ≥ 1, --runtime ≥ 1, one job and no --batch");
    }
    if args.rate_iops.is_some() {
        bail!("--rate_iops (open loop) is supported for local and cluster targets so far");
    }
    if args.hdr_log.is_some() {
        bail!("--hdr-log is supported for local and cluster targets so far");
    }
    let slo = output_and_slo(args)?;
    let rw = Rw::parse(&args.rw)?;
    let job = crate::raw::RawJob {
        rw,
        bs: args.bs,
        iodepth: args.iodepth,
        size: parse_size(&args.size)?,
        fdatasync: args.fdatasync,
        runtime: Duration::from_secs(args.runtime),
        ramp: Duration::from_secs(args.ramp_time),
        quiet: args.output_format == "json",
    };
    let (s, hist) = crate::raw::run(path, &job)?;
    maybe_plot(args, &hist)?;
    if args.output_format == "json" {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{:?} (raw io_uring, O_DIRECT): bs={} iodepth={} size={} MiB fdatasync={} target={} ({:.1}s, closed loop)",
            s.rw, s.bs, s.iodepth, s.size >> 20, s.fdatasync, s.target, s.runtime_s
        );
        println!(
            "  IOPS={:.0}, BW={:.1} MB/s, {} ops, {} syncs",
            s.iops, s.mb_per_s, s.ops, s.syncs
        );
        println!(
            "  latency (us): p50={} p90={} p99={} p99.9={} p99.99={} max={}",
            s.latency_us_p50,
            s.latency_us_p90,
            s.latency_us_p99,
            s.latency_us_p999,
            s.latency_us_p9999,
            s.latency_us_max
        );
    }
    match slo {
        Some(targets) => crate::slo::check(
            &targets,
            &crate::slo::Outcome {
                latency_us: &hist,
                iops: s.iops,
            },
        ),
        None => Ok(()),
    }
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
    };
    let cluster = crate::local::LocalCluster::start(&args.local_dir)?;
    println!("== job 1: commits (write)");
    let writes = crate::quorum::run_on(&args, cluster.map.clone(), 1, None)?;
    // A fresh volume: with no page store yet (issue #4), a node builds each page from all
    // of its records, and job 1 gives each of its 64 pages hundreds.
    let read = WriteArgs {
        rw: "randread".into(),
        name: "page-reads".into(),
        volume_base: 2,
        ..args
    };
    println!("== job 2: page reads at VDL (randread), one record per page");
    let reads = crate::quorum::run_on(&read, cluster.map.clone(), 1, None)?;
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
