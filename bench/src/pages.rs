//! `hexad-bench pages`: page reads through the quorum client, and how far a read-only
//! attachment lags the writer.
//!
//! 1. The writer fills `--pages` pages (spread over two PGs) with `--history` `WriteBytes`
//!    records each (one-record mini-transactions, 64 in flight).
//! 2. `--iodepth` tasks read random pages at the current VDL for `--runtime` seconds,
//!    closed loop (each read waits for the previous): latency per read, hedges counted.
//! 3. Reader lag: the writer commits one mini-transaction at a time (`--lag-commits` of
//!    them, 2 ms apart) while an attached reader polls the nodes for the VDL; the lag of a
//!    commit is from its acknowledgement at the writer to the first poll that sees it.
//!
//! `--source store` (the default) lets the writer's min read point follow VDL, waits after
//! the fill until every node has coalesced every page (and reports how fast they did, with
//! no foreground load), so reads start from a stored version (two 12 KiB slots read with
//! `O_DIRECT`) with no record to apply. `--source log` pins the min read point at 0, so
//! nothing is coalesced and every read applies the page's `--history` records from the hot
//! log. A node has no page cache: both read from disk.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use hexad_client::placement::ClusterMap;
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::Op;
use hexad_client::{Lsn, PageNo, VolumeId, PG_PAGES};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct PagesArgs {
    /// local (an embedded 6-node cluster) or cluster:FILE (a running cluster).
    #[arg(long, default_value = "local")]
    pub target: String,
    /// Where the embedded cluster keeps its data (a real disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub local_dir: std::path::PathBuf,
    /// Pages written, then read.
    #[arg(long, default_value_t = 2000)]
    pub pages: u64,
    /// Records per page.
    #[arg(long, default_value_t = 4)]
    pub history: u64,
    /// Reads in flight.
    #[arg(long, default_value_t = 16)]
    pub iodepth: usize,
    /// Seconds of reads.
    #[arg(long, default_value_t = 5)]
    pub runtime: u64,
    /// Commits whose reader lag is measured.
    #[arg(long, default_value_t = 500)]
    pub lag_commits: u64,
    /// Volume id (must be new).
    #[arg(long, default_value_t = 3000)]
    pub volume: u64,
    /// store (reads start from coalesced page versions) or log (nothing is coalesced).
    #[arg(long, default_value = "store")]
    pub source: String,
    /// normal or json.
    #[arg(long, default_value = "normal")]
    pub output_format: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    source: String,
    pages: u64,
    history: u64,
    fill_s: f64,
    /// Store source: seconds from the end of the fill until every node had coalesced
    /// everything, and the records per second that took (summed over the nodes).
    coalesce_s: Option<f64>,
    records_coalesced_per_s: Option<f64>,
    reads: u64,
    reads_per_s: f64,
    hedged: u64,
    read_us: Percentiles,
    lag_commits: u64,
    reader_lag_us: Percentiles,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

pub fn run(args: &PagesArgs) -> Result<()> {
    if args.pages == 0 || args.history == 0 || args.iodepth == 0 || args.lag_commits == 0 {
        bail!("--pages, --history, --iodepth and --lag-commits must be positive");
    }
    if !matches!(args.output_format.as_str(), "normal" | "json") {
        bail!("--output-format must be normal or json");
    }
    if !matches!(args.source.as_str(), "store" | "log") {
        bail!("--source must be store or log, not {:?}", args.source);
    }
    let (_local, map, shards) =
        crate::local::quorum_target(&args.target, &args.local_dir, "pages")?;
    let plan = Plan {
        pages: args.pages,
        history: args.history,
        depth: args.iodepth,
        runtime: Duration::from_secs(args.runtime),
        lag_commits: args.lag_commits,
        volume: VolumeId(args.volume),
        shards,
        quiet: args.output_format == "json",
        from_store: args.source == "store",
        shard_addrs: map
            .nodes()
            .flat_map(|n| {
                (0..n.shards.unwrap_or(shards)).map(|s| n.shard_addr(hexad_client::ShardId(s)))
            })
            .collect(),
    };
    let s = crate::drive::on_executor(move || async move { measure(map, plan).await })?;
    if args.output_format == "json" {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "pages: {} pages x {} records written in {:.1}s; closed loop, {} reads in flight; reads from the {}",
        s.pages,
        s.history,
        s.fill_s,
        args.iodepth,
        if plan_store(&s) { "page store" } else { "hot log" }
    );
    if let (Some(secs), Some(rate)) = (s.coalesce_s, s.records_coalesced_per_s) {
        println!("  coalesced by every node {secs:.2}s after the fill: {rate:.0} records/s (all nodes, no foreground load)");
    }
    println!(
        "  reads: {} ({:.0}/s, {} hedged); latency (us): p50={} p90={} p99={} p99.9={} max={}",
        s.reads,
        s.reads_per_s,
        s.hedged,
        s.read_us.p50,
        s.read_us.p90,
        s.read_us.p99,
        s.read_us.p999,
        s.read_us.max
    );
    println!(
        "  reader lag over {} commits (us): p50={} p90={} p99={} p99.9={} max={}",
        s.lag_commits,
        s.reader_lag_us.p50,
        s.reader_lag_us.p90,
        s.reader_lag_us.p99,
        s.reader_lag_us.p999,
        s.reader_lag_us.max
    );
    Ok(())
}

struct Plan {
    pages: u64,
    history: u64,
    depth: usize,
    runtime: Duration,
    lag_commits: u64,
    volume: VolumeId,
    shards: u16,
    quiet: bool,
    from_store: bool,
    shard_addrs: Vec<std::net::SocketAddr>,
}

fn plan_store(s: &Summary) -> bool {
    s.source == "store"
}

fn page_of(i: u64, pages: u64) -> PageNo {
    let half = pages.div_ceil(2);
    PageNo((i % pages / half) * PG_PAGES + i % pages % half)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

async fn measure(map: ClusterMap, plan: Plan) -> Result<Summary> {
    let mut cfg = VolumeConfig::new(plan.volume);
    cfg.default_shards = plan.shards;
    if !plan.from_store {
        cfg.min_read_point = Some(Lsn::NONE);
    }
    let vol = Rc::new(
        Volume::open(map.clone(), cfg.clone())
            .await
            .context("opening the volume")?,
    );
    // 1. Fill.
    let started = Instant::now();
    let next = Rc::new(Cell::new(0u64));
    let total = plan.pages * plan.history;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (vol, next, pages) = (vol.clone(), next.clone(), plan.pages);
        tasks.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= total {
                    return Ok::<(), hexad_client::volume::VolumeError>(());
                }
                next.set(i + 1);
                let mut p = ((i / pages % 64) as u32 * 100).to_le_bytes().to_vec();
                p.extend([i as u8; 100]);
                let change = Change {
                    page: page_of(i, pages),
                    op: Op::WriteBytes,
                    payload: Bytes::from(p),
                };
                let lsn = vol.append(&[change]).await?;
                vol.wait_durable(lsn).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("filling pages")?;
    }
    let fill_s = started.elapsed().as_secs_f64();
    if !plan.quiet {
        eprintln!("filled {} pages in {fill_s:.1}s", plan.pages);
    }
    let (mut coalesce_s, mut records_coalesced_per_s) = (None, None);
    if plan.from_store {
        // The nodes learn the final PGMRPL within a few ms; wait until none has a page
        // left to coalesce (blocking calls: nothing else runs on this executor now).
        let waited = Instant::now();
        let before =
            crate::drive::sum_stats(&plan.shard_addrs, Duration::from_secs(5))?.records_coalesced;
        loop {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let now = crate::drive::sum_stats(&plan.shard_addrs, Duration::from_secs(5))?;
            let (done, pending) = (now.records_coalesced, now.pages_pending);
            if pending == 0 {
                let secs = waited.elapsed().as_secs_f64();
                coalesce_s = Some(secs);
                records_coalesced_per_s = Some((done - before) as f64 / secs);
                break;
            }
            if waited.elapsed() > Duration::from_mins(2) {
                bail!("{pending} pages still not coalesced after 2 minutes");
            }
        }
    }
    if !plan.quiet {
        eprintln!("reading");
    }

    // 2. Random reads at VDL.
    let hist = Rc::new(RefCell::new(histogram()));
    let hedged = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + plan.runtime;
    let read_started = Instant::now();
    let mut tasks = Vec::new();
    for d in 0..plan.depth {
        let (vol, hist, hedged, pages) = (vol.clone(), hist.clone(), hedged.clone(), plan.pages);
        tasks.push(glommio::spawn_local(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ d as u64;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = Instant::now();
                let got = vol.read_page(page_of(x, pages), None).await?;
                let us = t.elapsed().as_micros() as u64;
                hist.borrow_mut().record(us.max(1)).expect("in range");
                hedged.set(hedged.get() + u64::from(got.hedged));
            }
            Ok::<(), hexad_client::volume::VolumeError>(())
        }));
    }
    for t in tasks {
        t.await.context("reading pages")?;
    }
    let reading_s = read_started.elapsed().as_secs_f64();
    let reads = hist.borrow().len();

    // 3. Reader lag.
    let reader = Rc::new(
        Volume::attach_reader(map, cfg)
            .await
            .context("attaching a reader")?,
    );
    let acked: Rc<RefCell<Vec<(Lsn, Instant)>>> = Rc::default();
    let lag = Rc::new(RefCell::new(histogram()));
    let done = Rc::new(Cell::new(false));
    let poller = {
        let (reader, acked, lag, done) = (reader.clone(), acked.clone(), lag.clone(), done.clone());
        glommio::spawn_local(async move {
            let mut measured = 0usize;
            while !done.get() || measured < acked.borrow().len() {
                let vdl = reader.refresh().await?;
                let now = Instant::now();
                let list = acked.borrow();
                while measured < list.len() && list[measured].0 <= vdl {
                    let us = now.duration_since(list[measured].1).as_micros() as u64;
                    lag.borrow_mut().record(us.max(1)).expect("in range");
                    measured += 1;
                }
            }
            Ok::<(), hexad_client::volume::VolumeError>(())
        })
    };
    for i in 0..plan.lag_commits {
        let mut p = 0u32.to_le_bytes().to_vec();
        p.extend([i as u8; 100]);
        let change = Change {
            page: page_of(i, plan.pages),
            op: Op::WriteBytes,
            payload: Bytes::from(p),
        };
        let lsn = vol.append(&[change]).await?;
        vol.wait_durable(lsn).await?;
        acked.borrow_mut().push((lsn, Instant::now()));
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    done.set(true);
    poller.await.context("reader polling")?;
    let latency = Percentiles::of(&hist.borrow());
    let reader_lag_us = Percentiles::of(&lag.borrow());
    Ok(Summary {
        source: if plan.from_store { "store" } else { "log" }.into(),
        pages: plan.pages,
        history: plan.history,
        fill_s,
        coalesce_s,
        records_coalesced_per_s,
        reads,
        reads_per_s: reads as f64 / reading_s,
        hedged: hedged.get(),
        read_us: latency,
        lag_commits: plan.lag_commits,
        reader_lag_us,
    })
}
