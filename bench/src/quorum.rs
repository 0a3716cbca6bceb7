//! `hexad-bench write --target cluster:FILE`: commits through the quorum client.
//!
//! `iodepth` tasks each commit one-record mini-transactions back to back (append, then wait
//! until VDL passes the commit). Commit latency is from append to durable on a write quorum
//! of the PG (closed loop: see `write.rs`).

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use hexad_client::placement::{ClusterMap, NodeEntry};
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::Op;
use hexad_client::{PageNo, VolumeId, PAGE_BYTES};
use serde::{Deserialize, Serialize};

use crate::drive::{closed_loop, open_loop, Operation, Tally, Window};
use crate::write::WriteArgs;

#[derive(Deserialize)]
struct ClusterFile {
    #[serde(default)]
    defaults: Defaults,
    node: Vec<NodeEntry>,
}

#[derive(Deserialize, Default)]
struct Defaults {
    shards: Option<u16>,
}

#[derive(Debug, Serialize)]
struct Summary {
    target: String,
    rw: crate::write::Rw,
    /// Pages the job addressed.
    pages: u64,
    bs: usize,
    /// Operations (commits or page reads) in flight.
    commits_in_flight: usize,
    /// Open loop at this rate (latency from each commit's scheduled time), or closed loop.
    rate_iops: Option<f64>,
    runtime_s: f64,
    /// Operations done: commits, or page reads for read jobs.
    commits: u64,
    commits_per_s: f64,
    latency_us_p50: u64,
    latency_us_p90: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
    /// For randrw jobs: the same per operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    by_op: Option<std::collections::BTreeMap<&'static str, OpSummary>>,
}

#[derive(Debug, Serialize)]
struct OpSummary {
    ops: u64,
    ops_per_s: f64,
    latency_us_p50: u64,
    latency_us_p90: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
}

impl OpSummary {
    fn of(h: &Histogram<u64>, secs: f64) -> OpSummary {
        OpSummary {
            ops: h.len(),
            ops_per_s: h.len() as f64 / secs,
            latency_us_p50: h.value_at_quantile(0.5),
            latency_us_p90: h.value_at_quantile(0.9),
            latency_us_p99: h.value_at_quantile(0.99),
            latency_us_p999: h.value_at_quantile(0.999),
            latency_us_max: h.max(),
        }
    }
}

pub fn run(args: &WriteArgs, path: &Path, slo: Option<&[crate::slo::Target]>) -> Result<()> {
    let (map, shards) = load_cluster(path)?;
    let hist = run_on(args, map, shards, slo)?;
    crate::write::maybe_plot(args, &hist)
}

/// A cluster file's nodes, and the shards per node where an entry does not say.
pub fn load_cluster(path: &Path) -> Result<(ClusterMap, u16)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ClusterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let map = ClusterMap::new(file.node).with_context(|| format!("cluster {}", path.display()))?;
    Ok((map, file.defaults.shards.unwrap_or(1)))
}

/// Runs the commit load against the nodes of `map`.
pub fn run_on(
    args: &WriteArgs,
    map: ClusterMap,
    default_shards: u16,
    slo: Option<&[crate::slo::Target]>,
) -> Result<Histogram<u64>> {
    let mut cfg = VolumeConfig::new(VolumeId(args.volume_base));
    cfg.default_shards = default_shards;
    let json = args.output_format == "json";
    let rw = crate::write::Rw::parse(&args.rw)?;
    let pages = crate::write::parse_size(&args.size)? / PAGE_BYTES as u64;
    let plan = Plan {
        rw,
        mix_read: args.rwmixread,
        pages,
        bs: args.bs,
        depth: args.iodepth,
        runtime: Duration::from_secs(args.runtime),
        ramp: Duration::from_secs(args.ramp_time),
        rate_iops: args.rate_iops,
        quiet: json,
    };
    let target = args.target.clone();
    let result = LocalExecutorBuilder::new(Placement::Unbound)
        .name("hexad-bench")
        .spawn(move || async move { load(map, cfg, plan).await })
        .map_err(|e| anyhow!("cannot start executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("bench executor failed: {e}"))??;
    let Loaded {
        latency_us: hist,
        by_kind,
        ops: commits,
        elapsed_s: elapsed,
        wall_start,
        intervals,
    } = result;
    if let Some(path) = &args.hdr_log {
        let comment = format!(
            "hexad-bench job {}: --rw {} --target {} --iodepth {}",
            args.name, args.rw, args.target, args.iodepth
        );
        crate::hdrlog::write(path, wall_start, &comment, &intervals)?;
        if !json {
            eprintln!(
                "HDR interval log ({} intervals) written to {}",
                intervals.len(),
                path.display()
            );
        }
    }
    let s = Summary {
        target,
        rw: plan.rw,
        pages: plan.pages,
        bs: plan.bs,
        commits_in_flight: plan.depth,
        rate_iops: plan.rate_iops,
        runtime_s: elapsed,
        commits,
        commits_per_s: commits as f64 / elapsed,
        latency_us_p50: hist.value_at_quantile(0.5),
        latency_us_p90: hist.value_at_quantile(0.9),
        latency_us_p99: hist.value_at_quantile(0.99),
        latency_us_p999: hist.value_at_quantile(0.999),
        latency_us_max: hist.max(),
        by_op: (plan.rw == crate::write::Rw::Mixed).then(|| {
            [
                ("commit", OpSummary::of(&by_kind[WRITE], elapsed)),
                ("read", OpSummary::of(&by_kind[READ], elapsed)),
            ]
            .into_iter()
            .collect()
        }),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let loop_kind = s.rate_iops.map_or("closed loop".to_string(), |r| {
            format!("open loop at {r}/s, latency from scheduled start")
        });
        let (what, done, rate, latency) = if s.rw == crate::write::Rw::Mixed {
            ("operations", "done", "ops/s", "latency, all operations")
        } else if s.rw.reads() {
            ("page reads", "read", "reads/s", "read latency")
        } else {
            (
                "mini-transactions",
                "committed",
                "commits/s",
                "commit latency",
            )
        };
        println!(
            "{} (quorum): bs={} pages={} in flight={} target={} ({:.1}s, {loop_kind})",
            args.rw, s.bs, s.pages, s.commits_in_flight, s.target, s.runtime_s,
        );
        println!(
            "  {done}: {} {what}, {:.0} {rate}",
            s.commits, s.commits_per_s
        );
        println!(
            "  {latency} (us): p50={} p90={} p99={} p99.9={} max={}",
            s.latency_us_p50,
            s.latency_us_p90,
            s.latency_us_p99,
            s.latency_us_p999,
            s.latency_us_max
        );
        for (op, o) in s.by_op.iter().flatten() {
            println!(
                "  {op}: {} ({:.0}/s), latency (us): p50={} p90={} p99={} p99.9={} max={}",
                o.ops,
                o.ops_per_s,
                o.latency_us_p50,
                o.latency_us_p90,
                o.latency_us_p99,
                o.latency_us_p999,
                o.latency_us_max
            );
        }
    }
    if let Some(targets) = slo {
        crate::slo::check(
            targets,
            &crate::slo::Outcome {
                latency_us: &hist,
                iops: s.commits_per_s,
            },
        )?;
    }
    Ok(hist)
}

/// One operation of the job: a commit (a one-record mini-transaction, appended and waited
/// for) or a page read at VDL.
struct Job {
    vol: Volume,
    bs: usize,
    rw: crate::write::Rw,
    pages: u64,
    /// Percent reads of a randrw job.
    mix_read: u64,
}

/// Operation kinds a job reports (`drive::Operation::run`).
const WRITE: usize = 0;
const READ: usize = 1;

impl Job {
    /// Page `k` of the job's range: alternately in PG 0 and PG 1, so the job fans out to
    /// two segment sets.
    fn page(k: u64) -> PageNo {
        PageNo((k % 2) * hexad_client::PG_PAGES + k / 2)
    }

    fn pick(&self, i: u64) -> PageNo {
        use crate::write::Rw;
        let k = match self.rw {
            Rw::Write | Rw::Read => i % self.pages,
            Rw::RandWrite | Rw::RandRead | Rw::Mixed => {
                let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                x ^= x >> 29;
                x % self.pages
            }
        };
        Job::page(k)
    }

    async fn commit(&self, page: PageNo, i: u64) -> Result<()> {
        let mut payload = vec![(i % 251) as u8; self.bs.max(4)];
        payload[..4].copy_from_slice(&0u32.to_le_bytes());
        let change = Change {
            page,
            op: Op::WriteBytes,
            payload: Bytes::from(payload),
        };
        let lsn = self.vol.append(&[change]).await?;
        self.vol.wait_durable(lsn).await?;
        Ok(())
    }
}

impl Operation for Job {
    async fn run(&self, i: u64) -> Result<usize> {
        let page = self.pick(i);
        let read = match self.rw {
            crate::write::Rw::Mixed => {
                (i.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32) % 100 < self.mix_read
            }
            rw => rw.reads(),
        };
        if read {
            self.vol.read_page(page, None).await?;
            Ok(READ)
        } else {
            self.commit(page, i).await?;
            Ok(WRITE)
        }
    }
}

async fn load(map: ClusterMap, cfg: VolumeConfig, plan: Plan) -> Result<Loaded> {
    let vol = Volume::open(map, cfg).await.context("opening the volume")?;
    let op = Rc::new(Job {
        vol,
        bs: plan.bs,
        rw: plan.rw,
        pages: plan.pages,
        mix_read: u64::from(plan.mix_read),
    });
    if plan.rw.any_reads() {
        prefill(&op, plan.quiet).await?;
    }
    let tally = Rc::new(Tally::with_intervals());
    let started = Instant::now();
    let wall_start = std::time::SystemTime::now();
    let deadline = started + plan.ramp + plan.runtime;
    let progress = {
        let tally = tally.clone();
        let (quiet, ramp, bs, unit) = (
            plan.quiet,
            plan.ramp,
            plan.bs,
            if plan.rw.reads() {
                "reads/s"
            } else {
                "commits/s"
            },
        );
        glommio::spawn_local(async move {
            let mut intervals: Vec<crate::hdrlog::Interval> = Vec::new();
            let mut interval_start = Instant::now();
            while Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                let h = tally.take_interval().expect("intervals are kept");
                let len = interval_start.elapsed();
                let rate = h.len() as f64 / len.as_secs_f64();
                if quiet {
                } else if interval_start < started + ramp {
                    eprintln!(
                        "[{:>4.0}s] ramping (not measured)",
                        started.elapsed().as_secs_f64()
                    );
                } else {
                    eprintln!(
                        "[{:>4.0}s] {rate:>8.0} {unit} {:>7.1} MB/s  p99 (last second) {} us",
                        started.elapsed().as_secs_f64(),
                        rate * bs as f64 / 1e6,
                        h.value_at_quantile(0.99)
                    );
                }
                if interval_start >= started + ramp {
                    intervals.push((interval_start.duration_since(started), len, h));
                }
                interval_start = Instant::now();
            }
            intervals
        })
    };
    let window = Window {
        ramp: plan.ramp,
        runtime: plan.runtime,
    };
    let measured = match plan.rate_iops {
        Some(rate) => open_loop(op, rate, plan.depth, window, tally).await,
        None => closed_loop(op, plan.depth, window, tally).await,
    }
    .context("an operation failed")?;
    let intervals = progress.await;
    Ok(Loaded {
        latency_us: measured.latency_us,
        by_kind: measured.by_kind,
        ops: measured.done,
        elapsed_s: measured.elapsed.as_secs_f64(),
        wall_start,
        intervals,
    })
}

/// What a load run measured.
struct Loaded {
    latency_us: Histogram<u64>,
    /// Per operation kind (`WRITE`, `READ`).
    by_kind: Vec<Histogram<u64>>,
    ops: u64,
    elapsed_s: f64,
    wall_start: std::time::SystemTime,
    /// Each measured second.
    intervals: Vec<crate::hdrlog::Interval>,
}

/// Writes every page of a read job once (64 commits in flight), so reads find data.
async fn prefill(job: &Rc<Job>, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!("prefilling {} pages for the read job", job.pages);
    }
    let next = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(glommio::spawn_local(async move {
            loop {
                let k = next.get();
                if k >= job.pages {
                    return Ok::<(), anyhow::Error>(());
                }
                next.set(k + 1);
                job.commit(Job::page(k), k).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("prefilling pages")?;
    }
    Ok(())
}

/// What to run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rw: crate::write::Rw,
    mix_read: u8,
    /// Pages the job addresses.
    pages: u64,
    bs: usize,
    depth: usize,
    runtime: Duration,
    /// Unmeasured warm-up before `runtime`.
    ramp: Duration,
    rate_iops: Option<f64>,
    quiet: bool,
}
