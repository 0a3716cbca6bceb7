//! A database-writer stand-in for multi-process recovery tests: opens a volume (with
//! recovery) and commits mini-transactions, or opens it read-only and dumps every committed
//! record. One line per event on stdout, flushed at once, so a test that kills this
//! process knows exactly what was acknowledged:
//!
//! ```text
//! OPEN epoch=E vdl=V vcl=C base=B allocate_after=A pgs=N fetched=F replicated=R ms=T attempts=K
//! WAIT <why>                    the open is waiting for a quorum
//! ISSUE seq=S                   about to append mini-transaction S
//! ACK seq=S lsn=L               S is durable (its commit LSN ≤ VDL)
//! REC lsn=L page=P cpl=0|1 payload=HEX   (read mode) one committed record
//! STOPPED vdl=V                 open stopped after the truncation step (--stop-after)
//! FENCED <why>                  a newer open took over; exit code 3
//! ERROR <why>                   anything else; exit code 2
//! DONE
//! ```

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::placement::ClusterMap;
use hexad_client::volume::{Change, RecoveryStep, Volume, VolumeConfig, VolumeError};
use hexad_client::wire::Op;
use hexad_client::{Lsn, PageNo, VolumeId};
use hexad_tests::writer_payload;

struct Args {
    cluster: PathBuf,
    volume: VolumeId,
    read: bool,
    open_only: bool,
    writer: u32,
    commits: u64,
    in_flight: u64,
    stop_after: Option<RecoveryStep>,
    open_timeout: Option<Duration>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        cluster: PathBuf::new(),
        volume: VolumeId(1),
        read: false,
        open_only: false,
        writer: 1,
        commits: 0,
        in_flight: 16,
        stop_after: None,
        open_timeout: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cluster" => a.cluster = value()?.into(),
            "--volume" => a.volume = VolumeId(value()?.parse()?),
            "--read" => a.read = true,
            "--open-only" => a.open_only = true,
            "--open-timeout-ms" => {
                a.open_timeout = Some(Duration::from_millis(value()?.parse()?));
            }
            "--writer" => a.writer = value()?.parse()?,
            "--commits" => a.commits = value()?.parse()?,
            "--in-flight" => a.in_flight = value()?.parse()?,
            "--stop-after" => match value()?.as_str() {
                "truncated" => a.stop_after = Some(RecoveryStep::Truncated),
                other => bail!("unknown step {other}"),
            },
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn progress(why: &str) {
    say(&format!("WAIT {why}"));
}

/// Mini-transaction `seq` of writer `w`: one record in PG 0 and one in PG 1.
fn changes(w: u32, seq: u64) -> Vec<Change> {
    let pages = [seq % 50, hexad_client::PG_PAGES + seq % 50];
    pages
        .iter()
        .enumerate()
        .map(|(i, p)| Change {
            page: PageNo(*p),
            op: Op::WriteBytes,
            payload: Bytes::from(writer_payload(w, seq, i as u32)),
        })
        .collect()
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hexad-test-writer: {e}");
            std::process::exit(2);
        }
    };
    let code = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            match run(args).await {
                Ok(()) => 0,
                Err(e) => match e.downcast_ref::<VolumeError>() {
                    Some(VolumeError::Fenced(why)) => {
                        say(&format!("FENCED {why}"));
                        3
                    }
                    Some(VolumeError::Stopped { vdl, .. }) => {
                        say(&format!("STOPPED vdl={vdl}"));
                        0
                    }
                    _ => {
                        say(&format!("ERROR {e:#}"));
                        2
                    }
                },
            }
        })
        .expect("executor")
        .join()
        .expect("writer thread");
    std::process::exit(code);
}

async fn run(args: Args) -> Result<()> {
    let file = hexad_node::config::ClusterConfig::load(&args.cluster)?;
    let map = ClusterMap::new(file.nodes)?;
    let mut cfg = VolumeConfig::new(args.volume);
    // The tests read this writer's records back from the nodes' logs: keep them there
    // (nodes coalesce and drop records only below the min read point).
    cfg.min_read_point = Some(Lsn::NONE);
    cfg.request_timeout = Duration::from_secs(1);
    cfg.quorum_timeout = Duration::from_secs(10);
    cfg.progress = Some(progress);
    cfg.stop_after = args.stop_after;
    if let Some(t) = args.open_timeout {
        cfg.open_timeout = t;
    }
    if args.read {
        let reader = Volume::attach_reader(map, cfg).await?;
        say_open(reader.recovery());
        for pg in reader.pgs() {
            for r in reader.records(pg, Lsn::NONE, reader.vdl()).await? {
                let hex = r.payload().iter().fold(String::new(), |mut h, b| {
                    let _ = write!(h, "{b:02x}");
                    h
                });
                say(&format!(
                    "REC lsn={} page={} cpl={} payload={hex}",
                    r.lsn,
                    r.page,
                    u8::from(r.cpl)
                ));
            }
        }
        say("DONE");
        return Ok(());
    }
    let vol = Rc::new(Volume::open(map, cfg).await?);
    say_open(vol.recovery());
    if args.open_only {
        say("DONE");
        return Ok(());
    }
    let next = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (vol, next) = (vol.clone(), next.clone());
        let (w, commits) = (args.writer, args.commits);
        tasks.push(glommio::spawn_local(async move {
            loop {
                let seq = next.get();
                if commits > 0 && seq >= commits {
                    return Ok::<(), VolumeError>(());
                }
                next.set(seq + 1);
                say(&format!("ISSUE seq={seq}"));
                let lsn = vol.append(&changes(w, seq)).await?;
                vol.wait_durable(lsn).await?;
                say(&format!("ACK seq={seq} lsn={lsn}"));
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    say("DONE");
    Ok(())
}

fn say_open(r: &hexad_client::volume::Recovered) {
    say(&format!(
        "OPEN epoch={} vdl={} vcl={} base={} allocate_after={} pgs={} fetched={} replicated={} ms={} attempts={}",
        r.epoch,
        r.vdl,
        r.vcl,
        r.base,
        r.allocate_after,
        r.pgs.len(),
        r.records_fetched,
        r.records_replicated,
        r.elapsed.as_millis(),
        r.attempts
    ));
}
