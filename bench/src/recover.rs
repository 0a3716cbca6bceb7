//! `hexad-bench recover`: how long a volume open (recovery, DESIGN §7) takes, by number of
//! PGs and by records written since the volume's last open.
//!
//! For each case: a fresh volume is opened and `records` one-record mini-transactions are
//! appended round-robin over `pgs` PGs. With `--crash in-flight` (the default) they are
//! all issued without waiting and the writer is dropped `--crash-after-ms` later, with
//! records still in flight: some on every node, some on a few, some nowhere. With
//! `--crash after-durable` every commit is waited for first. Dropping the writer sends
//! nothing to the nodes (as if its process died). Then the volume is opened for writing
//! (timed), opened again at once (timed: nothing new to examine), and opened read-only
//! (timed). An open examines the records above the last sealed truncation range.

use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hexad_client::placement::ClusterMap;
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::Op;
use hexad_client::{PageNo, VolumeId, PG_PAGES};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// local (an embedded 6-node cluster) or cluster:FILE (a running cluster).
    #[arg(long, default_value = "local")]
    pub target: String,
    /// Where the embedded cluster keeps its data (a real disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub local_dir: std::path::PathBuf,
    /// PG counts to measure, comma-separated.
    #[arg(long, default_value = "1,16,128", value_delimiter = ',')]
    pub pgs: Vec<u32>,
    /// Records written before the crash, comma-separated.
    #[arg(long, default_value = "1000,100000", value_delimiter = ',')]
    pub records: Vec<u64>,
    /// Mini-transactions in flight while writing.
    #[arg(long, default_value_t = 64)]
    pub iodepth: usize,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 200)]
    pub bs: usize,
    /// First volume id; each case uses the next one (they must be new volumes).
    #[arg(long, default_value_t = 1000)]
    pub volume_base: u64,
    /// in-flight (drop the writer with records in flight) or after-durable.
    #[arg(long, default_value = "in-flight")]
    pub crash: String,
    /// With --crash in-flight: how long after the last append the writer dies.
    #[arg(long, default_value_t = 5)]
    pub crash_after_ms: u64,
    /// normal or json.
    #[arg(long, default_value = "normal")]
    pub output_format: String,
}

#[derive(Debug, Clone, Serialize)]
struct Case {
    volume: u64,
    pgs: u32,
    records: u64,
    write_s: f64,
    /// The writer's VDL when it died: every commit up to it was acknowledged.
    vdl_at_crash: u64,
    open_ms: f64,
    /// Milliseconds per step of the write open.
    open_phases_ms: Vec<(String, f64)>,
    open_fetched: u64,
    open_replicated: u64,
    recovered_vdl: u64,
    reopen_ms: f64,
    reopen_fetched: u64,
    read_only_open_ms: f64,
}

pub fn run(args: &RecoverArgs) -> Result<()> {
    if args
        .pgs
        .iter()
        .any(|p| *p == 0 || *p > hexad_client::MAX_PGS)
    {
        bail!("--pgs values must be 1..={}", hexad_client::MAX_PGS);
    }
    if args.records.contains(&0) || args.iodepth == 0 || !(4..=8192).contains(&args.bs) {
        bail!("--records and --iodepth must be positive and --bs 4..=8192");
    }
    let in_flight = match args.crash.as_str() {
        "in-flight" => true,
        "after-durable" => false,
        other => bail!("--crash must be in-flight or after-durable, not {other:?}"),
    };
    if !matches!(args.output_format.as_str(), "normal" | "json") {
        bail!("--output-format must be normal or json");
    }
    let (_local, map, shards) =
        crate::local::quorum_target(&args.target, &args.local_dir, "recover")?;
    let mut cases = Vec::new();
    let mut volume = args.volume_base;
    for &pgs in &args.pgs {
        for &records in &args.records {
            let (map, bs, depth) = (map.clone(), args.bs, args.iodepth);
            let crash = in_flight.then(|| Duration::from_millis(args.crash_after_ms));
            let case = crate::drive::on_executor(move || async move {
                let case = Shape {
                    pgs,
                    records,
                    bs,
                    depth,
                    crash,
                };
                one_case(map, shards, VolumeId(volume), case).await
            })?;
            if args.output_format == "normal" {
                println!(
                    "pgs={:<4} records={:<7} VDL at crash={:<7} | open {:>6.1} ms (examined {}, re-replicated {}, VDL {}) | reopen {:>5.1} ms (examined {}) | read-only open {:>5.1} ms",
                    case.pgs,
                    case.records,
                    case.vdl_at_crash,
                    case.open_ms,
                    case.open_fetched,
                    case.open_replicated,
                    case.recovered_vdl,
                    case.reopen_ms,
                    case.reopen_fetched,
                    case.read_only_open_ms
                );
                let phases: Vec<String> = case
                    .open_phases_ms
                    .iter()
                    .map(|(n, ms)| format!("{n} {ms:.1}"))
                    .collect();
                println!("    open steps (ms): {}", phases.join(", "));
            }
            cases.push(case);
            volume += 1;
        }
    }
    if args.output_format == "json" {
        println!("{}", serde_json::to_string_pretty(&cases)?);
    }
    Ok(())
}

fn config(volume: VolumeId, shards: u16) -> VolumeConfig {
    let mut cfg = VolumeConfig::new(volume);
    cfg.default_shards = shards;
    cfg
}

struct Shape {
    pgs: u32,
    records: u64,
    bs: usize,
    depth: usize,
    /// Drop the writer this long after the last append, without waiting for commits.
    crash: Option<Duration>,
}

async fn one_case(map: ClusterMap, shards: u16, volume: VolumeId, shape: Shape) -> Result<Case> {
    let Shape {
        pgs,
        records,
        bs,
        depth,
        crash,
    } = shape;
    let started = Instant::now();
    let vol = Rc::new(
        Volume::open(map.clone(), config(volume, shards))
            .await
            .context("creating the volume")?,
    );
    if vol.recovery().vdl.0 != 0 {
        bail!("volume {volume} already holds data: pick another --volume-base");
    }
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.resize(bs.max(4), 0x5a);
    let payload = Bytes::from(payload);
    let next = Rc::new(std::cell::Cell::new(0u64));
    let mut tasks = Vec::new();
    for _ in 0..depth {
        let (vol, next, payload) = (vol.clone(), next.clone(), payload.clone());
        tasks.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= records {
                    return Ok::<(), hexad_client::volume::VolumeError>(());
                }
                next.set(i + 1);
                let pg = (i % u64::from(pgs)) * PG_PAGES;
                let change = Change {
                    page: PageNo(pg + (i / u64::from(pgs)) % 64),
                    op: Op::WriteBytes,
                    payload: payload.clone(),
                };
                let lsn = vol.append(&[change]).await?;
                if crash.is_none() {
                    vol.wait_durable(lsn).await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("writing")?;
    }
    if let Some(after) = crash {
        glommio::timer::sleep(after).await;
    }
    let write_s = started.elapsed().as_secs_f64();
    let vdl_at_crash = vol.vdl();
    // The crash: the writer goes away without a word to the nodes.
    drop(vol);
    glommio::timer::sleep(Duration::from_millis(50)).await;

    let t = Instant::now();
    let vol = Volume::open(map.clone(), config(volume, shards))
        .await
        .context("recovering")?;
    let open_ms = ms(t);
    let r = vol.recovery().clone();
    drop(vol);
    if r.vdl < vdl_at_crash {
        bail!(
            "recovered VDL {} is below the writer's VDL {vdl_at_crash} when it died",
            r.vdl
        );
    }
    let t = Instant::now();
    let again = Volume::open(map.clone(), config(volume, shards))
        .await
        .context("reopening")?;
    let reopen_ms = ms(t);
    let reopen_fetched = again.recovery().records_fetched;
    drop(again);
    let t = Instant::now();
    let reader = Volume::attach_reader(map, config(volume, shards))
        .await
        .context("read-only open")?;
    let read_only_open_ms = ms(t);
    if reader.vdl() < r.vdl {
        bail!(
            "read-only open found VDL {} below the write open's {}",
            reader.vdl(),
            r.vdl
        );
    }
    Ok(Case {
        volume: volume.0,
        pgs,
        records,
        write_s,
        vdl_at_crash: vdl_at_crash.0,
        open_ms,
        open_phases_ms: r
            .phases
            .iter()
            .map(|(n, d)| ((*n).to_string(), d.as_secs_f64() * 1000.0))
            .collect(),
        open_fetched: r.records_fetched,
        open_replicated: r.records_replicated,
        recovered_vdl: r.vdl.0,
        reopen_ms,
        reopen_fetched,
        read_only_open_ms,
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
