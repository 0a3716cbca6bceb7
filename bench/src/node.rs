//! `hexad-bench write --target node:HOST:PORT`: one node, no quorum.
//!
//! Job j writes its own segment (a volume whose PG 0 lands on shard j % shards) over one
//! pipelined connection to that shard, `iodepth` requests in flight. A write is one
//! `AppendBatch` of `batch` records of `bs` payload bytes, chained in LSN order; its latency
//! runs from the request to the node's ack (durable in the node's hot log). A read is one
//! `GetPage` at the segment's complete LSN, as the node last acknowledged it. Read jobs
//! write every page once first. Besides the latency, the summary shows the node's group
//! commit: log syncs per second and records per sync, from the node's stats.
//!
//! Like a writer, each job tells its segment its progress (`Progress`: VDL, min read point
//! and complete point all at the segment's acknowledged SCL) at most every
//! [`PROGRESS_EVERY`], so the node coalesces pages and recycles its hot log under a load
//! that runs longer than the log is large.

use std::cell::Cell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use hexad_client::blocking::Connection;
use hexad_client::net::Network;
use hexad_client::placement::segment_shard;
use hexad_client::volume::Pipelined;
use hexad_client::wire::{Message, Op, Record};
use hexad_client::{Lsn, MembershipEpoch, PageNo, PgIndex, VolumeEpoch, VolumeId, PAGE_BYTES};

use crate::drive::{measure, Operation, Plan};
use crate::report::{NodeLog, PageWork, Shape, TargetStats};
use crate::write::{Rw, WriteArgs};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_millis(10);
const PG: PgIndex = PgIndex(0);
/// Operation kinds (`drive::Operation::run`).
const WRITE: usize = 0;
const READ: usize = 1;

/// One job's segment and its connection.
struct Segment {
    conn: Rc<Pipelined>,
    volume: VolumeId,
    /// When `Progress` was last sent.
    told: Cell<Instant>,
    /// Next LSN to send.
    next: Cell<u64>,
    /// The segment's complete LSN from the node's latest ack.
    complete: Cell<u64>,
}

struct NodeLoad {
    segments: Vec<Segment>,
    rw: Rw,
    pages: u64,
    bs: usize,
    batch: usize,
    mix_read: u8,
}

impl NodeLoad {
    /// The record at `lsn`, for page `k` of the job's pages.
    fn record(&self, lsn: u64, k: u64) -> Record {
        let page = PageNo(PG.first_page().0 + k);
        if self.bs == PAGE_BYTES {
            let image = [lsn as u8; PAGE_BYTES];
            return Record::new(
                Lsn(lsn),
                Lsn(lsn - 1),
                Lsn(0),
                page,
                Op::PageImage,
                true,
                &image,
            );
        }
        // WriteBytes: a 4-byte offset (0), then the bytes.
        let mut payload = vec![lsn as u8; self.bs];
        payload[..4].copy_from_slice(&0u32.to_le_bytes());
        let op = Op::WriteBytes;
        Record::new(Lsn(lsn), Lsn(lsn - 1), Lsn(0), page, op, true, &payload)
    }

    /// Appends one record for each of `pages` (page indexes) at the segment's next LSNs, in
    /// one batch, and waits for the ack.
    async fn append(&self, seg: &Segment, pages: &[u64]) -> Result<()> {
        let first = seg.next.get();
        seg.next.set(first + pages.len() as u64);
        let msg = Message::AppendBatch {
            volume: seg.volume,
            pg: PG,
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            records: (first..)
                .zip(pages)
                .map(|(l, k)| self.record(l, *k))
                .collect(),
        };
        match seg.conn.call(msg).await.map_err(anyhow::Error::msg)? {
            Message::AppendAck { scl, .. } => {
                seg.complete.set(seg.complete.get().max(scl.0));
                if seg.told.get().elapsed() >= PROGRESS_EVERY {
                    seg.told.set(Instant::now());
                    let at = Lsn(seg.complete.get());
                    let progress = Message::Progress {
                        volume: seg.volume,
                        vdl: at,
                        pgmrpl: at,
                        pgs: vec![(PG, at)],
                    };
                    // Not awaited: the write's latency is its append's alone.
                    let conn = seg.conn.clone();
                    glommio::spawn_local(async move { conn.call(progress).await }).detach();
                }
                Ok(())
            }
            Message::Error { code, message, .. } => {
                bail!("{} refused a batch: {code:?}: {message}", seg.conn.addr())
            }
            other => bail!("{}: unexpected reply {other:?}", seg.conn.addr()),
        }
    }

    async fn read(&self, seg: &Segment, i: u64) -> Result<()> {
        let at = Lsn(seg.complete.get());
        let page = PageNo(PG.first_page().0 + self.rw.pick(i, self.pages));
        let msg = Message::GetPage {
            volume: seg.volume,
            pg: PG,
            page,
            read_lsn: at,
            complete_lsn: at,
            page_head: Lsn::NONE,
        };
        match seg.conn.call(msg).await.map_err(anyhow::Error::msg)? {
            Message::Page { .. } => Ok(()),
            Message::Error { code, message, .. } => {
                bail!(
                    "{}: GetPage {page:?} at {at:?}: {code:?}: {message}",
                    seg.conn.addr()
                )
            }
            other => bail!("{}: unexpected reply {other:?}", seg.conn.addr()),
        }
    }
}

impl Operation for NodeLoad {
    async fn run(&self, i: u64) -> Result<usize> {
        let jobs = self.segments.len() as u64;
        // With depth = iodepth × numjobs, a closed-loop worker always lands on one job.
        let seg = &self.segments[(i % jobs) as usize];
        if self.rw.is_read(i / jobs, self.mix_read) {
            self.read(seg, i / jobs).await?;
            Ok(READ)
        } else {
            let n = self.batch as u64;
            let pages: Vec<u64> = (i * n..(i + 1) * n)
                .map(|x| self.rw.pick(x, self.pages))
                .collect();
            self.append(seg, &pages).await?;
            Ok(WRITE)
        }
    }
}

pub fn run(
    args: &WriteArgs,
    hostport: &str,
    slo: Option<&[crate::slo::Target]>,
) -> Result<Histogram<u64>> {
    let rw = Rw::parse(&args.rw)?;
    let pages = crate::write::parse_size(&args.size)? / PAGE_BYTES as u64;
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
    let shards: Vec<SocketAddr> = shard_ports
        .iter()
        .map(|p| SocketAddr::new(addr.ip(), *p))
        .collect();
    // Job j writes its own segment, on shard j % shards, through that shard's port.
    let mut jobs = Vec::new();
    let mut volume = args.volume_base;
    let count = shards.len() as u16;
    for j in 0..args.numjobs {
        let shard = (j % shards.len()) as u16;
        while segment_shard(VolumeId(volume), PG, count).0 != shard {
            volume += 1;
        }
        jobs.push((shards[usize::from(shard)], VolumeId(volume)));
        volume += 1;
    }
    let bytes_per_op = args.bs * if rw.reads() { 1 } else { args.batch };
    let plan = Plan::for_job(args, rw, args.iodepth * args.numjobs, bytes_per_op);
    let (bs, batch, mix_read) = (args.bs, args.batch, args.rwmixread);
    let before = crate::drive::sum_stats(&shards, IO_TIMEOUT)?;
    let cpu = crate::cpu::NodeCpu::Stats(shards.clone());
    let loaded = crate::drive::on_executor(move || async move {
        let mut segments = Vec::new();
        for (addr, volume) in jobs {
            segments.push(open_segment(addr, volume).await?);
        }
        let load = Rc::new(NodeLoad {
            segments,
            rw,
            pages,
            bs,
            batch,
            mix_read,
        });
        if rw.any_reads() {
            prefill(&load, plan.quiet).await?;
        }
        measure(load, plan, &cpu).await
    })?;
    let after = crate::drive::sum_stats(&shards, IO_TIMEOUT)?;
    let secs = loaded.elapsed_s;
    let syncs = (after.log_syncs - before.log_syncs).max(1) as f64;
    let node_log = NodeLog {
        records_per_s: (after.records_appended - before.records_appended) as f64 / secs,
        log_syncs_per_s: (after.log_syncs - before.log_syncs) as f64 / secs,
        records_per_sync: (after.records_appended - before.records_appended) as f64 / syncs,
        requests_per_sync: (after.batches_acked - before.batches_acked) as f64 / syncs,
        log_mb_per_s: (after.log_bytes_written - before.log_bytes_written) as f64 / secs / 1e6,
    };
    let shape = Shape {
        path: "one node, no quorum",
        rw,
        pages,
        batch: Some(args.batch),
        bytes_per_op: plan.bytes_per_op,
        kinds: ["append", "read"],
    };
    let pages = PageWork::between(&before, &after, secs);
    crate::report::finish(
        args,
        &shape,
        loaded,
        TargetStats::Node(node_log, pages),
        slo,
    )
}

/// Connects to the segment's shard and continues its chain after whatever an earlier run
/// left there.
async fn open_segment(addr: SocketAddr, volume: VolumeId) -> Result<Segment> {
    let conn = Pipelined::connect(&Network::Tcp, addr, IO_TIMEOUT, IO_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    let state = conn
        .call(Message::GetSegmentState { volume, pg: PG })
        .await
        .map_err(anyhow::Error::msg)?;
    let (next, complete) = match state {
        Message::SegmentState {
            highest_lsn, scl, ..
        } => (highest_lsn.0 + 1, scl.0),
        _ => (1, 0),
    };
    Ok(Segment {
        conn: Rc::new(conn),
        volume,
        told: Cell::new(Instant::now()),
        next: Cell::new(next),
        complete: Cell::new(complete),
    })
}

/// Writes every page of every job's segment once (one record per page, 16 in flight per
/// segment), so reads find data.
async fn prefill(load: &Rc<NodeLoad>, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!(
            "prefilling {} pages in each of {} segments for the read job",
            load.pages,
            load.segments.len()
        );
    }
    let l = load.clone();
    crate::drive::fill_pages(load.segments.len(), load.pages, 16, move |s, k| {
        let load = l.clone();
        async move { load.append(&load.segments[s], &[k]).await }
    })
    .await
}
