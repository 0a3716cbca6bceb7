//! `hexad-bench rebuild`: segment rebuild throughput, and what a running rebuild does to
//! foreground commits (issue #6).
//!
//! An embedded 6-node cluster is prepared without starting it. Nodes 1–5 get a segment
//! (volume 1, PG 0) with `--page-data` of page versions in their page stores and a floor
//! above every record in `segments.meta`, so its records exist only as pages. Nodes 1–5
//! start; a writer commits to another volume at `--rate` commits/s (open loop, each commit
//! timed from its scheduled start). After `--warmup` seconds node 6 starts with an empty
//! data directory: it finds the segment at its peers, copies the baseline from one of them
//! and catches up. The run reports the copy's MB/s (page bytes over the time the segment
//! was copying, polled from node 6's `SegmentStats`) and commit latency before and during
//! the rebuild, in the same run.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use hexad_client::blocking::Connection;
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::{Message, Op, RebuildPhase, SegmentStat};
use hexad_client::{Lsn, PageNo, VolumeEpoch, VolumeId, PAGE_BYTES};
use hexad_node::hotlog::format::SegmentKey;
use hexad_node::meta::{MetaStore, SegmentMeta};
use serde::Serialize;

use crate::fault::Nodes;
use crate::local::LocalCluster;
use crate::restart::{fill, PG, VOLUME};

/// The floor the prepared segments claim: every record up to it is in their pages.
const FLOOR: Lsn = Lsn(1000);
/// The foreground writer's volume.
const WRITER_VOLUME: VolumeId = VolumeId(2);
/// Longest the rebuild may take.
const REBUILD_BOUND: Duration = Duration::from_mins(10);
const POLL: Duration = Duration::from_millis(20);
/// Phases of the foreground load.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Page data in the segment to rebuild (K, M, G suffixes).
    #[arg(long, default_value = "1G")]
    pub page_data: String,
    /// Foreground commits per second while it runs (0: none).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of foreground load before node 6 starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Seconds of foreground load in all (the rebuild must end within it).
    #[arg(long, default_value_t = 30)]
    pub runtime: u64,
    /// The nodes' rebuild rate limit (`repair.rebuild_mb_per_s`; 0: none).
    #[arg(long, default_value_t = 0)]
    pub rebuild_mb_per_s: u64,
    /// Where the cluster's data goes (a real disk with room for 6 × --page-data).
    #[arg(long, default_value = "/var/tmp")]
    pub local_dir: PathBuf,
    /// normal or json.
    #[arg(long, default_value = "normal")]
    pub output_format: String,
}

#[derive(Debug, Serialize)]
struct Latency {
    commits: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            commits: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    page_bytes: u64,
    copy_s: f64,
    copy_mb_s: f64,
    /// Node 6 start to the segment serving reads.
    rebuild_s: f64,
    rate: u64,
    before: Latency,
    during: Latency,
    failed_commits: u64,
}

pub fn run(args: &RebuildArgs) -> Result<()> {
    if !matches!(args.output_format.as_str(), "normal" | "json") {
        bail!("--output-format must be normal or json");
    }
    let bytes = crate::write::parse_size(&args.page_data)?;
    let pages = bytes / PAGE_BYTES as u64;
    if pages == 0 {
        bail!("--page-data must hold at least one {PAGE_BYTES}-byte page");
    }
    let repair = format!(
        "[defaults.repair]\nrebuild_mb_per_s = {}\n",
        args.rebuild_mb_per_s
    );
    let cluster = LocalCluster::prepare_with(&args.local_dir, &repair)?;
    let started = Instant::now();
    for id in 1..=5 {
        prepare_segment(&cluster.node_dir(id), pages)?;
    }
    eprintln!(
        "wrote {} MiB of page versions on each of nodes 1-5 in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    let nodes = cluster.handle();
    for id in 1..=5 {
        nodes.restart(id)?;
    }
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let writer = (args.rate > 0).then(|| {
        let (map, rate, phase) = (cluster.map.clone(), args.rate, phase.clone());
        let runtime = Duration::from_secs(args.runtime);
        std::thread::spawn(move || foreground(map, rate, runtime, phase))
    });
    std::thread::sleep(Duration::from_secs(args.warmup));
    let six = cluster
        .map
        .node(hexad_client::NodeId(6))
        .expect("node 6")
        .shard_addr(hexad_client::ShardId(0));
    phase.store(DURING, Ordering::SeqCst);
    let rebuild_started = Instant::now();
    nodes.restart(6)?;
    let mut conn = Connection::connect(six, Duration::from_secs(5))?;
    // When node 6 was first seen copying, and first seen past it.
    let (mut copy_from, mut copy_to): (Option<Instant>, Option<Instant>) = (None, None);
    let done = loop {
        let stat = segment_stat(&mut conn)?;
        let now = Instant::now();
        if let Some(s) = &stat {
            match s.rebuild {
                RebuildPhase::Copying => {
                    copy_from.get_or_insert(now);
                }
                _ if s.rebuild_bytes > 0 => {
                    copy_to.get_or_insert(now);
                }
                _ => {}
            }
            if s.rebuild == RebuildPhase::None && s.scl >= FLOOR && s.rebuild_bytes > 0 {
                break *s;
            }
        }
        if rebuild_started.elapsed() > REBUILD_BOUND {
            bail!("node 6 did not rebuild within {REBUILD_BOUND:?}: {stat:?}");
        }
        std::thread::sleep(POLL);
    };
    let rebuild_s = rebuild_started.elapsed().as_secs_f64();
    phase.store(AFTER, Ordering::SeqCst);
    let copy_s = match (copy_from, copy_to) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => bail!("the copy ended within one {POLL:?} poll: use more --page-data"),
    };
    let (hists, failed) = match writer {
        Some(w) => w.join().expect("writer thread")?,
        None => (vec![new_hist(), new_hist()], 0),
    };
    let report = Report {
        page_bytes: done.rebuild_bytes,
        copy_s,
        copy_mb_s: done.rebuild_bytes as f64 / 1e6 / copy_s,
        rebuild_s,
        rate: args.rate,
        before: Latency::of(&hists[0]),
        during: Latency::of(&hists[1]),
        failed_commits: failed,
    };
    if args.output_format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "rebuild of {} MiB of pages: copied in {:.2} s ({:.0} MB/s, polled every {} ms); serving reads {:.2} s after node 6 started",
            report.page_bytes >> 20,
            report.copy_s,
            report.copy_mb_s,
            POLL.as_millis(),
            report.rebuild_s
        );
        if args.rate > 0 {
            for (name, l) in [("before", &report.before), ("during", &report.during)] {
                println!(
                    "foreground commits {name:>6} the rebuild: {:>6} commits, p50 {} us, p99 {} us, p99.9 {} us, max {} us",
                    l.commits, l.p50_us, l.p99_us, l.p999_us, l.max_us
                );
            }
            println!(
                "p99 during / before: {:.2}; failed commits: {}",
                report.during.p99_us as f64 / report.before.p99_us.max(1) as f64,
                report.failed_commits
            );
        }
    }
    if report.failed_commits > 0 {
        bail!("{} foreground commits failed", report.failed_commits);
    }
    Ok(())
}

/// Gives node `dir` the segment to rebuild: page versions of `pages` pages and metadata
/// saying every record up to [`FLOOR`] is in them.
fn prepare_segment(dir: &std::path::Path, pages: u64) -> Result<()> {
    let shard = dir.join("shard-0");
    std::fs::create_dir_all(shard.join("pages"))
        .with_context(|| format!("creating {}", shard.display()))?;
    let key = SegmentKey {
        volume: VOLUME,
        pg: PG,
    };
    fill(
        &shard
            .join("pages")
            .join(hexad_node::pagestore::file_name(key)),
        pages,
    )?;
    let mut meta = MetaStore::load(&shard)?;
    meta.segments.insert(
        key,
        SegmentMeta {
            volume_epoch: VolumeEpoch(1),
            truncations: Vec::new(),
            floor: FLOOR,
            ..SegmentMeta::default()
        },
    );
    meta.save()?;
    Ok(())
}

fn segment_stat(conn: &mut Connection) -> Result<Option<SegmentStat>> {
    match conn.call(&Message::GetSegmentStats)? {
        Message::SegmentStats { segments } => Ok(segments
            .into_iter()
            .find(|s| s.volume == VOLUME && s.pg == PG)),
        other => bail!("node 6 answered {other:?}"),
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A foreground commit: one 200-byte write, reported as the phase it started in.
struct Commit {
    vol: Volume,
    phase: Arc<AtomicU8>,
}

impl crate::drive::Operation for Commit {
    async fn run(&self, i: u64) -> Result<usize> {
        let which = self.phase.load(Ordering::SeqCst);
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend(std::iter::repeat_n((i % 251) as u8, 200));
        let change = Change {
            // Both PGs, as the write jobs do (the figures in bench/RESULTS.md were taken so;
            // the single-PG stall seen then was a client resend bug, since fixed).
            page: PageNo((i % 2) * hexad_client::PG_PAGES + (i / 2) % 5_000),
            op: Op::WriteBytes,
            payload: Bytes::from(payload),
        };
        let lsn = self.vol.append(&[change]).await?;
        self.vol.wait_durable(lsn).await?;
        Ok(usize::from(which))
    }
}

/// Commits at `rate`/s for `runtime` (open loop, from the scheduled start); returns the
/// latency histograms of the BEFORE and DURING phases and the failed commits.
fn foreground(
    map: hexad_client::placement::ClusterMap,
    rate: u64,
    runtime: Duration,
    phase: Arc<AtomicU8>,
) -> Result<(Vec<Histogram<u64>>, u64)> {
    crate::drive::on_executor(move || async move {
        let mut cfg = VolumeConfig::new(WRITER_VOLUME);
        cfg.open_timeout = Duration::from_secs(30);
        let vol = Volume::open(map, cfg).await?;
        let op = Rc::new(Commit { vol, phase });
        let window = crate::drive::Window {
            ramp: Duration::ZERO,
            runtime,
        };
        let tally = Rc::new(crate::drive::Tally::with_intervals());
        let m = crate::drive::open_loop(op, rate as f64, 4096, window, tally).await?;
        Ok((m.by_kind[..2].to_vec(), m.errors))
    })
}
