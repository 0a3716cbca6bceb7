//! The end of every `write` job, whatever its target: the fio-like summary (text or JSON),
//! the `--hdr-log` interval log and the `--slo` check.

use std::collections::BTreeMap;

use anyhow::Result;
use hdrhistogram::Histogram;
use hexad_client::wire::NodeStats;
use serde::Serialize;

use crate::drive::Loaded;
use crate::write::{Rw, WriteArgs};

/// What the job was, for the summary's heading.
pub struct Shape {
    /// "quorum" (commits through the client), "one node, no quorum" or the raw engine.
    pub path: &'static str,
    pub rw: Rw,
    pub pages: u64,
    /// Records per request (node target).
    pub batch: Option<usize>,
    /// Payload bytes one operation moves (for MB/s).
    pub bytes_per_op: usize,
    /// Names of the operation kinds, by index (`drive::Operation::run`).
    pub kinds: [&'static str; 2],
}

/// What a target adds to the summary.
pub enum TargetStats {
    /// Commits through the quorum client, with the nodes' page-store work when every node
    /// answered `GetStats` before and after.
    Quorum(Option<PageWork>),
    /// The node's own log figures, and its coalescer's.
    Node(NodeLog, PageWork),
    /// The raw engine's file and syncs.
    File(crate::raw::FileStats),
}

/// What the nodes' coalescers did during a run (summed over the nodes).
#[derive(Debug, Serialize)]
pub struct PageWork {
    pub records_coalesced_per_s: f64,
    pub page_versions_per_s: f64,
    /// Page-store writes (neighbouring versions share one).
    pub page_writes_per_s: f64,
    pub backpressure_waits: u64,
    /// Hot-log syncs (group commits) per second over all nodes, and records per sync.
    pub log_syncs_per_s: f64,
    pub records_per_sync: f64,
    /// Records per acked `AppendBatch` request: how well the writer's boxcar fills a frame.
    pub records_per_request: f64,
}

impl PageWork {
    /// The work between two `GetStats` sums taken `secs` apart.
    pub fn between(before: &NodeStats, after: &NodeStats, secs: f64) -> PageWork {
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        PageWork {
            records_coalesced_per_s: rate(after.records_coalesced, before.records_coalesced),
            page_versions_per_s: rate(after.page_versions_written, before.page_versions_written),
            page_writes_per_s: rate(after.page_writes, before.page_writes),
            backpressure_waits: after
                .backpressure_waits
                .saturating_sub(before.backpressure_waits),
            log_syncs_per_s: rate(after.log_syncs, before.log_syncs),
            records_per_sync: after
                .records_appended
                .saturating_sub(before.records_appended) as f64
                / after.log_syncs.saturating_sub(before.log_syncs).max(1) as f64,
            records_per_request: after
                .records_appended
                .saturating_sub(before.records_appended) as f64
                / after
                    .batches_acked
                    .saturating_sub(before.batches_acked)
                    .max(1) as f64,
        }
    }
}

/// The node's own log figures over a node-target run.
#[derive(Debug, Serialize)]
pub struct NodeLog {
    pub records_per_s: f64,
    pub log_syncs_per_s: f64,
    pub records_per_sync: f64,
    pub requests_per_sync: f64,
    pub log_mb_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    target: String,
    rw: Rw,
    /// Pages the job addressed (for the file target: blocks of `bs`).
    pages: u64,
    bs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    /// Operations in flight (per job).
    iodepth: usize,
    numjobs: usize,
    /// Open loop at this rate (latency from each operation's scheduled time), or closed
    /// loop (null).
    rate_iops: Option<f64>,
    runtime_s: f64,
    /// Operations done: commits, appended batches or page reads.
    ops: u64,
    ops_per_s: f64,
    mb_per_s: f64,
    /// Operations that failed in the measured window (the run goes on; the exit status
    /// is non-zero if any did).
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    #[serde(flatten)]
    latency: Percentiles,
    /// CPU seconds of the writer and the nodes in the window, and per operation.
    #[serde(flatten)]
    cpu: crate::cpu::CpuUse,
    /// For randrw jobs: the same per operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    by_op: Option<BTreeMap<&'static str, OpSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_log: Option<NodeLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<crate::raw::FileStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_pages: Option<PageWork>,
}

#[derive(Debug, Serialize)]
#[allow(clippy::struct_field_names)] // they are the JSON keys
struct Percentiles {
    latency_us_p50: u64,
    latency_us_p90: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_p9999: u64,
    latency_us_max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            latency_us_p50: h.value_at_quantile(0.5),
            latency_us_p90: h.value_at_quantile(0.9),
            latency_us_p99: h.value_at_quantile(0.99),
            latency_us_p999: h.value_at_quantile(0.999),
            latency_us_p9999: h.value_at_quantile(0.9999),
            latency_us_max: h.max(),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50={} p90={} p99={} p99.9={} p99.99={} max={}",
            self.latency_us_p50,
            self.latency_us_p90,
            self.latency_us_p99,
            self.latency_us_p999,
            self.latency_us_p9999,
            self.latency_us_max
        )
    }
}

#[derive(Debug, Serialize)]
struct OpSummary {
    ops: u64,
    ops_per_s: f64,
    #[serde(flatten)]
    latency: Percentiles,
}

/// Writes the interval log if asked, prints the summary, checks the SLO; returns the
/// job's latency histogram (for plots).
pub fn finish(
    args: &WriteArgs,
    shape: &Shape,
    loaded: Loaded,
    stats: TargetStats,
    slo: Option<&[crate::slo::Target]>,
) -> Result<Histogram<u64>> {
    let json = args.output_format == "json";
    if let Some(path) = &args.hdr_log {
        let comment = format!(
            "hexad-bench job {}: --rw {} --target {} --iodepth {}",
            args.name, args.rw, args.target, args.iodepth
        );
        crate::hdrlog::write(path, loaded.wall_start, &comment, &loaded.intervals)?;
        if !json {
            eprintln!(
                "HDR interval log ({} intervals) written to {}",
                loaded.intervals.len(),
                path.display()
            );
        }
    }
    let secs = loaded.elapsed_s;
    let (node_log, file, node_pages) = match stats {
        TargetStats::Quorum(p) => (None, None, p),
        TargetStats::Node(n, p) => (Some(n), None, Some(p)),
        TargetStats::File(f) => (None, Some(f), None),
    };
    let hist = loaded.latency_us;
    let s = Summary {
        name: args.name.clone(),
        target: args.target.clone(),
        rw: shape.rw,
        pages: shape.pages,
        bs: args.bs,
        batch: shape.batch,
        iodepth: args.iodepth,
        numjobs: args.numjobs,
        rate_iops: args.rate_iops,
        runtime_s: secs,
        ops: loaded.ops,
        ops_per_s: loaded.ops as f64 / secs,
        mb_per_s: loaded.ops as f64 * shape.bytes_per_op as f64 / secs / 1e6,
        errors: loaded.errors,
        first_error: loaded.first_error.clone(),
        latency: Percentiles::of(&hist),
        cpu: loaded.cpu,
        by_op: (shape.rw == Rw::Mixed).then(|| {
            shape
                .kinds
                .iter()
                .zip(&loaded.by_kind)
                .map(|(name, h)| {
                    let o = OpSummary {
                        ops: h.len(),
                        ops_per_s: h.len() as f64 / secs,
                        latency: Percentiles::of(h),
                    };
                    (*name, o)
                })
                .collect()
        }),
        node_log,
        file,
        node_pages,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_text(&s, shape);
    }
    if let Some(targets) = slo {
        crate::slo::check(
            targets,
            &crate::slo::Outcome {
                latency_us: &hist,
                iops: s.ops_per_s,
            },
        )?;
    }
    if s.errors > 0 {
        anyhow::bail!(
            "{} operations failed; the first: {}",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(hist)
}

fn print_text(s: &Summary, shape: &Shape) {
    let loop_kind = s.rate_iops.map_or("closed loop".to_string(), |r| {
        format!("open loop at {r}/s, latency from scheduled start")
    });
    let (done, what, rate, latency) = match s.rw {
        Rw::Mixed => ("done", "operations", "ops/s", "latency, all operations"),
        rw if rw.reads() => ("read", "page reads", "reads/s", "read latency"),
        _ if s.file.is_some() => ("written", "blocks", "writes/s", "write latency"),
        _ if shape.batch.is_some() => ("acked", "batches", "batches/s", "ack latency"),
        _ => (
            "committed",
            "mini-transactions",
            "commits/s",
            "commit latency",
        ),
    };
    let batch = s.batch.map_or(String::new(), |b| format!(" batch={b}"));
    println!(
        "{}: {} via {}: bs={}{batch} {}={} iodepth={} numjobs={} target={} ({:.1}s, {loop_kind})",
        s.name,
        s.rw.name(),
        shape.path,
        s.bs,
        if s.file.is_some() { "blocks" } else { "pages" },
        s.pages,
        s.iodepth,
        s.numjobs,
        s.target,
        s.runtime_s,
    );
    println!(
        "  {done}: {} {what}, {:.0} {rate}, {:.1} MB/s; errors: {}",
        s.ops, s.ops_per_s, s.mb_per_s, s.errors
    );
    println!("  {latency} (us): {}", s.latency.line());
    println!("  {}", s.cpu.line());
    for (op, o) in s.by_op.iter().flatten() {
        println!(
            "  {op}: {} ({:.0}/s), latency (us): {}",
            o.ops,
            o.ops_per_s,
            o.latency.line()
        );
    }
    if let Some(n) = &s.node_log {
        println!(
            "  node log: {:.0} records/s, {:.0} syncs/s, {:.1} records/sync, {:.2} requests/sync, {:.1} MB/s written",
            n.records_per_s, n.log_syncs_per_s, n.records_per_sync, n.requests_per_sync, n.log_mb_per_s
        );
    }
    if let Some(p) = &s.node_pages {
        println!(
            "  page stores: {:.0} records/s coalesced into {:.0} page versions/s in {:.0} writes/s; {} appends slowed by back-pressure",
            p.records_coalesced_per_s, p.page_versions_per_s, p.page_writes_per_s, p.backpressure_waits
        );
        println!(
            "  hot logs: {:.0} group commits/s over all nodes, {:.1} records each; {:.1} records per request",
            p.log_syncs_per_s, p.records_per_sync, p.records_per_request
        );
    }
    if let Some(f) = &s.file {
        println!(
            "  file: {} MiB used, fdatasync every {} writes per slot (0: never), {} syncs (ramp included)",
            f.size >> 20,
            f.fdatasync,
            f.syncs
        );
    }
}
