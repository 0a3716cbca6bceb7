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
use hexad_client::{PageNo, VolumeId};
use serde::{Deserialize, Serialize};

use crate::write::WriteArgs;

/// Pages the load touches: spread over two PGs so commits fan out to two segment sets.
const PAGES: u64 = 64;

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
    bs: usize,
    commits_in_flight: usize,
    runtime_s: f64,
    commits: u64,
    commits_per_s: f64,
    latency_us_p50: u64,
    latency_us_p90: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
}

pub fn run(args: &WriteArgs, path: &Path, slo: Option<&[crate::slo::Target]>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ClusterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let map = ClusterMap::new(file.node).with_context(|| format!("cluster {}", path.display()))?;
    let mut cfg = VolumeConfig::new(VolumeId(args.volume_base));
    cfg.default_shards = file.defaults.shards.unwrap_or(1);
    let (bs, depth, runtime, json) = (
        args.bs,
        args.iodepth,
        args.runtime,
        args.output_format == "json",
    );
    let target = args.target.clone();
    let result = LocalExecutorBuilder::new(Placement::Unbound)
        .name("hexad-bench")
        .spawn(move || async move {
            load(map, cfg, bs, depth, Duration::from_secs(runtime), json).await
        })
        .map_err(|e| anyhow!("cannot start executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("bench executor failed: {e}"))??;
    let (hist, commits, elapsed) = result;
    let s = Summary {
        target,
        bs,
        commits_in_flight: depth,
        runtime_s: elapsed,
        commits,
        commits_per_s: commits as f64 / elapsed,
        latency_us_p50: hist.value_at_quantile(0.5),
        latency_us_p90: hist.value_at_quantile(0.9),
        latency_us_p99: hist.value_at_quantile(0.99),
        latency_us_p999: hist.value_at_quantile(0.999),
        latency_us_max: hist.max(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "write (quorum): bs={} commits in flight={} target={} ({:.1}s, closed loop)",
            s.bs, s.commits_in_flight, s.target, s.runtime_s
        );
        println!(
            "  committed: {} mini-transactions, {:.0} commits/s",
            s.commits, s.commits_per_s
        );
        println!(
            "  commit latency (us): p50={} p90={} p99={} p99.9={} max={}",
            s.latency_us_p50,
            s.latency_us_p90,
            s.latency_us_p99,
            s.latency_us_p999,
            s.latency_us_max
        );
    }
    match slo {
        Some(targets) => crate::slo::check(
            targets,
            &crate::slo::Outcome {
                latency_us: &hist,
                iops: s.commits_per_s,
            },
        ),
        None => Ok(()),
    }
}

async fn load(
    map: ClusterMap,
    cfg: VolumeConfig,
    bs: usize,
    depth: usize,
    runtime: Duration,
    quiet: bool,
) -> Result<(Histogram<u64>, u64, f64)> {
    let vol = Rc::new(Volume::open(map, cfg));
    let started = Instant::now();
    let deadline = started + runtime;
    let committed = Rc::new(Cell::new(0u64));
    let progress = {
        let committed = committed.clone();
        glommio::spawn_local(async move {
            let mut last = 0;
            while Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                let now = committed.get();
                if !quiet {
                    eprintln!(
                        "[{:>4.0}s] {:>8} commits/s",
                        started.elapsed().as_secs_f64(),
                        now - last
                    );
                }
                last = now;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..depth as u64 {
        let (vol, committed) = (vol.clone(), committed.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut i = t;
            while Instant::now() < deadline {
                let mut payload = vec![(i % 251) as u8; bs.max(4)];
                payload[..4].copy_from_slice(&0u32.to_le_bytes());
                let page = PageNo(
                    (i % PAGES) * (hexad_client::PG_PAGES / PAGES * 2)
                        % (2 * hexad_client::PG_PAGES),
                );
                let change = Change {
                    page,
                    op: Op::WriteBytes,
                    payload: Bytes::from(payload),
                };
                let t0 = Instant::now();
                let lsn = vol.append(&[change]).await?;
                vol.wait_durable(lsn).await?;
                hist.record(t0.elapsed().as_micros() as u64)
                    .expect("latency within bounds");
                committed.set(committed.get() + 1);
                i += depth as u64;
            }
            Ok::<_, hexad_client::volume::VolumeError>(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        let h = t.await.context("a commit failed")?;
        hist.add(&h).expect("same bounds");
    }
    progress.await;
    Ok((hist, committed.get(), started.elapsed().as_secs_f64()))
}
