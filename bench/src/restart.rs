//! `hexad-bench restart`: node restart time by page-store size (issue #4: a restart scans
//! only the hot log, so it should not depend on how much page data the node stores).
//!
//! For each size: a fresh one-shard node directory; its page store gets that many bytes of
//! page versions (slot A of consecutive pages of one segment, written in the node's own
//! slot format and synced; LSN 0, as a restored baseline would be); the node starts (timed,
//! to its ready line); the same records are appended to the segment's hot log through one
//! connection; the node is killed with SIGKILL and started again (timed). Every run has the same hot
//! log; only the page store's size differs. A page read at the end checks the stored data
//! is what the node serves.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hexad_client::blocking::Connection;
use hexad_client::wire::{Message, Op, Record};
use hexad_client::{Lsn, MembershipEpoch, PageNo, PgIndex, VolumeEpoch, VolumeId, PAGE_BYTES};
use hexad_node::hotlog::format::SegmentKey;
use hexad_node::pagestore::format::{self, SLOT_BYTES};
use serde::Serialize;

/// The volume and PG whose page store `fill` writes.
pub(crate) const VOLUME: VolumeId = VolumeId(1);
pub(crate) const PG: PgIndex = PgIndex(0);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_mins(5);
/// Smallest page store measured: more pages than the appended records touch.
const MIN_PAGE_DATA: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Page data per run (K, M, G suffixes), comma-separated.
    #[arg(long, default_value = "1G,10G", value_delimiter = ',')]
    pub page_data: Vec<String>,
    /// Records appended to the hot log before the timed restart (200-byte writes, 100 per
    /// request).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Where the node's data goes (a real disk with room for 1.5 × the largest size).
    #[arg(long, default_value = "/var/tmp")]
    pub local_dir: PathBuf,
    /// normal or json.
    #[arg(long, default_value = "normal")]
    pub output_format: String,
}

#[derive(Debug, Serialize)]
struct Run {
    page_data_bytes: u64,
    page_file_bytes: u64,
    fill_s: f64,
    /// Start to ready with an empty hot log.
    first_start_ms: u128,
    /// Start to ready after SIGKILL, with the records in the hot log.
    restart_ms: u128,
    records_in_log: u64,
}

pub fn run(args: &RestartArgs) -> Result<()> {
    if !matches!(args.output_format.as_str(), "normal" | "json") {
        bail!("--output-format must be normal or json");
    }
    if args.records == 0 {
        bail!("--records must be positive");
    }
    let sizes: Vec<u64> = args
        .page_data
        .iter()
        .map(|s| crate::write::parse_size(s))
        .collect::<Result<_>>()?;
    if let Some(small) = sizes.iter().find(|b| **b < MIN_PAGE_DATA) {
        bail!("--page-data {small} bytes: at least 16M (the records touch the first 1000 pages)");
    }
    let json = args.output_format == "json";
    let mut runs = Vec::new();
    for bytes in sizes {
        let dir = args
            .local_dir
            .join(format!("hexad-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = one(&dir, bytes, args.records, json);
        let _ = std::fs::remove_dir_all(&dir);
        let run = run?;
        if !json {
            println!(
                "page data {:>6} MiB (file {} MiB, filled in {:.1} s): first start {} ms, restart with {} records in the log {} ms",
                run.page_data_bytes >> 20,
                run.page_file_bytes >> 20,
                run.fill_s,
                run.first_start_ms,
                run.records_in_log,
                run.restart_ms
            );
        }
        runs.push(run);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    Ok(())
}

fn one(dir: &Path, bytes: u64, records: u64, quiet: bool) -> Result<Run> {
    let shard = dir.join("data/shard-0");
    std::fs::create_dir_all(shard.join("pages"))
        .with_context(|| format!("creating {}", shard.display()))?;
    let pages = bytes / PAGE_BYTES as u64;
    if !quiet {
        eprintln!(
            "writing {pages} page versions ({} MiB) into {}",
            bytes >> 20,
            dir.display()
        );
    }
    let started = Instant::now();
    let file = shard
        .join("pages")
        .join(hexad_node::pagestore::file_name(SegmentKey {
            volume: VOLUME,
            pg: PG,
        }));
    fill(&file, pages)?;
    let fill_s = started.elapsed().as_secs_f64();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\naz = \"az1\"\ndata_dir = \"{}\"\nbase_port = {port}\nshards = 1\npin_shards = false\n[hot_log]\nfile_bytes = 67108864\nfile_count = 8\n",
            dir.join("data").display()
        ),
    )?;
    let (mut node, first_start_ms) = start(&config)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let appended = append(addr, records);
    let _ = node.kill();
    let _ = node.wait();
    appended?;
    let (mut node, restart_ms) = start(&config)?;
    let checked = check(addr, pages, records);
    let _ = node.kill();
    let _ = node.wait();
    checked?;
    Ok(Run {
        page_data_bytes: pages * PAGE_BYTES as u64,
        page_file_bytes: std::fs::metadata(&file).map_or(0, |m| m.len()),
        fill_s,
        first_start_ms,
        restart_ms,
        records_in_log: records,
    })
}

/// The bytes page `k` holds in the page store.
fn image(k: u64) -> [u8; PAGE_BYTES] {
    [(k % 251) as u8; PAGE_BYTES]
}

/// Writes slot A of pages 0..pages (slot B stays a hole) and syncs.
pub(crate) fn fill(path: &Path, pages: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let hole = vec![0u8; SLOT_BYTES];
    let mut at = 0;
    for k in 0..pages {
        let page = PageNo(PG.first_page().0 + k);
        // Slot A offsets rise with the page; slot B's between them stay zeros.
        while at < format::slot_offset(PG, page, 0) {
            out.write_all(&hole)?;
            at += SLOT_BYTES as u64;
        }
        out.write_all(&format::encode(VOLUME, PG, page, Lsn::NONE, &image(k)))?;
        at += SLOT_BYTES as u64;
    }
    let file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(())
}

/// Starts the node (this binary in its node role) and times it to its ready line.
fn start(config: &Path) -> Result<(Child, u128)> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg(crate::local::NODE_ARG)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the node")?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    for line in out.lines() {
        if line?.contains(" ready: ") {
            return Ok((child, started.elapsed().as_millis()));
        }
        if started.elapsed() > READY_TIMEOUT {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("the node did not become ready")
}

/// Appends `records` 200-byte writes to pages of the segment (100 per request).
fn append(addr: SocketAddr, records: u64) -> Result<()> {
    let mut conn = Connection::connect(addr, IO_TIMEOUT)?;
    let mut lsn = 1u64;
    while lsn <= records {
        let end = (lsn + 100).min(records + 1);
        let batch = (lsn..end)
            .map(|l| {
                let mut payload = vec![l as u8; 200];
                payload[..4].copy_from_slice(&0u32.to_le_bytes());
                let page = PageNo(PG.first_page().0 + l % 1000);
                Record::new(
                    Lsn(l),
                    Lsn(l - 1),
                    Lsn(0),
                    page,
                    Op::WriteBytes,
                    true,
                    &payload,
                )
            })
            .collect();
        match conn.call(&Message::AppendBatch {
            volume: VOLUME,
            pg: PG,
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            records: batch,
        })? {
            Message::AppendAck { .. } => {}
            other => bail!("append: {other:?}"),
        }
        lsn = end;
    }
    Ok(())
}

/// The last stored page (no records touch it) reads back as stored.
fn check(addr: SocketAddr, pages: u64, records: u64) -> Result<()> {
    let k = pages - 1;
    let mut conn = Connection::connect(addr, IO_TIMEOUT)?;
    match conn.call(&Message::GetPage {
        volume: VOLUME,
        pg: PG,
        page: PageNo(PG.first_page().0 + k),
        read_lsn: Lsn(records),
        complete_lsn: Lsn(records),
        page_head: Lsn::NONE,
    })? {
        Message::Page { data, .. } if data[..] == image(k)[..] => Ok(()),
        Message::Page { .. } => bail!("page {k} does not hold its stored bytes"),
        other => bail!("reading page {k}: {other:?}"),
    }
}
