//! A shard: the segments it owns, its hot log, and the handling of one request. Generic
//! over [`Disk`], so tests can run it on a simulated disk.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use hexad_client::placement::segment_shard;
use hexad_client::wire::message::MAX_INDEX_ENTRIES;
use hexad_client::wire::{ErrorCode, IndexEntry, Message, NodeStats, Record, PROTOCOL_VERSION};
use hexad_client::{Lsn, MembershipEpoch, NodeId, PageNo, PgIndex, ShardId, VolumeEpoch, VolumeId};

use crate::clock::Clock;
use crate::disk::Disk;
use crate::hotlog::format::{Entry, SegmentKey};
use crate::hotlog::scan::Recovery;
use crate::hotlog::{DurableRecord, HotLog, HotLogConfig, LogError};
use crate::meta::MetaStore;
use crate::pagestore::PageStore;
use crate::readers::ReaderSlots;
use crate::reply::Reply;
use crate::reply::{below_floor, no_such_segment, saturate, stale_epoch};
use crate::segment::{RecordMeta, Segment};
use in_flight::{Appending, InFlight};
use persist::MetaOutcome;

/// Most bytes of records in one `Records` reply, whatever the request asks for.
pub const MAX_FETCH_REPLY_BYTES: usize = 4 << 20;

/// Identity of a shard within its node.
#[derive(Debug, Clone)]
pub struct ShardIdentity {
    pub node_id: NodeId,
    pub shard: ShardId,
    /// Every shard's port, indexed by shard.
    pub shard_ports: Vec<u16>,
}

pub(crate) type Segments = Rc<RefCell<HashMap<SegmentKey, Segment>>>;

/// A writer's latest `Progress` for one volume. Each field only grows.
#[derive(Debug, Default)]
pub(crate) struct VolumeProgress {
    pub(crate) vdl: Lsn,
    pub(crate) pgmrpl: Lsn,
    /// Per PG: its last record at or below `vdl`.
    pub(crate) complete: HashMap<hexad_client::PgIndex, Lsn>,
}

pub struct Shard<D: Disk> {
    pub(crate) id: ShardIdentity,
    log: Rc<HotLog<D>>,
    pub(crate) segments: Segments,
    /// Durable epochs and truncation ranges; saved before any reply that depends on them.
    pub(crate) meta: RefCell<MetaStore>,
    /// Metadata changes made in memory and not yet saved: a save carries all of them and
    /// tells each whether it became durable (a failed save undoes them all).
    meta_waiting: RefCell<Vec<MetaOutcome>>,
    /// What writers reported (`Progress`), per volume; in memory only.
    pub(crate) progress: RefCell<HashMap<VolumeId, VolumeProgress>>,
    /// Read-only attachments' slots, for volumes whose PG 0 this shard serves.
    pub(crate) readers: RefCell<ReaderSlots>,
    records_appended: Cell<u64>,
    bytes_appended: Cell<u64>,
    batches_acked: Cell<u64>,
    corrupt_blocks: u64,
    /// Page versions, if this shard keeps them (the real node does; simulated-disk tests
    /// build every page from the log).
    pub(crate) pages: Option<Rc<PageStore>>,
    /// Where gossip and rebuilds connect to peers: TCP, or a simulation's network.
    network: RefCell<hexad_client::net::Network>,
    /// The slot the coalescer is writing, per page: a read ignores it if torn.
    pub(crate) writing: RefCell<HashMap<(SegmentKey, PageNo), usize>>,
    pub(crate) page_versions_written: Cell<u64>,
    /// Page-store writes (a write carries one or more versions).
    pub(crate) page_writes: Cell<u64>,
    /// Reads answered because the page's own chain proved them complete (SCL did not).
    pub(crate) chain_reads: Cell<u64>,
    /// Records and bytes gossip pulled from peers.
    pub(crate) gossip_records_pulled: Cell<u64>,
    pub(crate) gossip_bytes_pulled: Cell<u64>,
    /// Segment rebuilds: page versions and bytes copied, and repair replies that failed
    /// their CRC here.
    pub(crate) rebuild_pages_copied: Cell<u64>,
    pub(crate) rebuild_bytes_copied: Cell<u64>,
    pub(crate) repair_chunks_rejected: Cell<u64>,
    /// A rebuild copies at most this many page bytes per second (0: no limit).
    pub rebuild_bytes_per_s: Cell<u64>,
    /// Floors held in place for peers copying a baseline (see `rebuild.rs`).
    pub(crate) floor_pins: RefCell<HashMap<SegmentKey, crate::rebuild::FloorPin>>,
    /// Fault injection for tests (`HEXAD_FAULT_CORRUPT_REPAIR`, see `rebuild.rs`): once
    /// this file exists, corrupt as many repair replies as it says.
    pub fault_arm_file: RefCell<Option<std::path::PathBuf>>,
    pub(crate) fault_corrupt_repair: Cell<u32>,
    pub(crate) records_coalesced: Cell<u64>,
    pub(crate) corrupt_page_versions: Cell<u64>,
    /// Why a page-store sync failed, if one did: nothing written since the last good sync
    /// can be trusted (see `Shard::sync_pages`), so no version is stored until a restart.
    pub(crate) page_store_failed: RefCell<Option<String>>,
    /// Per segment, the epochs of the batches taken but not yet durable, and how many of
    /// each: the epoch checks count them as held.
    appending: Appending,
    /// Appends delayed because the hot log was nearly full.
    pub(crate) backpressure_waits: Cell<u64>,
    /// When the last `AppendBatch` arrived (the coalescer works harder when appends stop).
    pub(crate) last_append: Cell<std::time::Instant>,
    /// What every decision that depends on time reads.
    pub(crate) clock: Rc<dyn Clock>,
}

/// What a shard found at startup.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub records: usize,
    pub segments: usize,
    pub blocks: u64,
    pub corruption: Vec<crate::hotlog::scan::Corruption>,
}

impl<D: Disk + 'static> Shard<D> {
    /// Recovers the shard from its hot log. The writer task must then be spawned with
    /// [`Shard::log`]`().run_writer()`.
    pub async fn open(
        id: ShardIdentity,
        disk: D,
        cfg: HotLogConfig,
        meta: MetaStore,
        pages: Option<PageStore>,
        clock: Rc<dyn Clock>,
    ) -> std::io::Result<(Rc<Shard<D>>, OpenReport)> {
        let segments: Segments = Rc::default();
        // Epochs and truncation ranges first, so that replaying the log drops what they annul.
        for (key, m) in &meta.segments {
            let mut seg = Segment::new(*key);
            seg.observe_epoch(m.volume_epoch);
            seg.membership = m.membership;
            seg.restore_floor(m.floor);
            for t in &m.truncations {
                seg.add_truncation(*t).map_err(std::io::Error::other)?;
            }
            segments.borrow_mut().insert(*key, seg);
        }
        let sink = segments.clone();
        let on_durable = Box::new(move |records: &[DurableRecord]| {
            let mut segs = sink.borrow_mut();
            for r in records {
                apply(&mut segs, r);
            }
        });
        let (log, recovery) = HotLog::open(disk, cfg, on_durable).await?;
        let report = rebuild(&segments, &recovery);
        let shard = Rc::new(Shard {
            id,
            log,
            segments,
            meta: RefCell::new(meta),
            meta_waiting: RefCell::default(),
            progress: RefCell::default(),
            records_appended: Cell::new(0),
            bytes_appended: Cell::new(0),
            batches_acked: Cell::new(0),
            corrupt_blocks: report
                .corruption
                .iter()
                .map(|c| c.last_seq - c.first_seq + 1)
                .sum(),
            pages: pages.map(Rc::new),
            network: RefCell::default(),
            writing: RefCell::default(),
            readers: RefCell::default(),
            page_versions_written: Cell::new(0),
            page_writes: Cell::new(0),
            chain_reads: Cell::new(0),
            gossip_records_pulled: Cell::new(0),
            gossip_bytes_pulled: Cell::new(0),
            rebuild_pages_copied: Cell::new(0),
            rebuild_bytes_copied: Cell::new(0),
            repair_chunks_rejected: Cell::new(0),
            rebuild_bytes_per_s: Cell::new(0),
            floor_pins: RefCell::default(),
            fault_arm_file: RefCell::default(),
            fault_corrupt_repair: Cell::new(0),
            records_coalesced: Cell::new(0),
            corrupt_page_versions: Cell::new(0),
            page_store_failed: RefCell::new(None),
            appending: RefCell::default(),
            backpressure_waits: Cell::new(0),
            last_append: Cell::new(clock.now()),
            clock,
        });
        Ok((shard, report))
    }

    pub fn log(&self) -> &Rc<HotLog<D>> {
        &self.log
    }

    /// Where gossip and rebuilds connect (TCP unless a simulation says otherwise).
    pub fn set_network(&self, network: hexad_client::net::Network) {
        *self.network.borrow_mut() = network;
    }

    pub(crate) fn network(&self) -> hexad_client::net::Network {
        self.network.borrow().clone()
    }

    /// The shard's page store, if it keeps one (a simulation crashes it with the disk).
    pub fn page_store(&self) -> Option<&Rc<PageStore>> {
        self.pages.as_ref()
    }

    /// Handles one decoded request. The write and read paths have their own small futures;
    /// every other request is boxed, so the future a connection spawns per request stays
    /// small (the whole match inline made it 9 KiB, copied and allocated per append).
    pub async fn handle(&self, msg: Message) -> Reply {
        if let Some(reply) = request_segment(&msg).and_then(|key| self.check_owner(key)) {
            return reply;
        }
        match msg {
            Message::AppendBatch {
                volume,
                pg,
                volume_epoch,
                membership_epoch,
                records,
            } => {
                let key = SegmentKey { volume, pg };
                self.append_batch(key, volume_epoch, membership_epoch, records)
                    .await
            }
            Message::GetPage {
                volume,
                pg,
                page,
                read_lsn,
                complete_lsn,
                page_head,
            } => {
                let key = SegmentKey { volume, pg };
                if !pg.contains(page) {
                    return Reply::error(
                        ErrorCode::RecordOutsidePg,
                        0,
                        format!("page {page} is in pg {}, not pg {pg}", page.pg()),
                    );
                }
                Box::pin(self.get_page(key, page, read_lsn, complete_lsn, page_head)).await
            }
            other => Box::pin(self.handle_control(other)).await,
        }
    }

    /// `AppendBatch`: checks the batch against the segment's epochs and membership, appends
    /// it to the hot log, and acknowledges once it is durable (and findable by recovery).
    async fn append_batch(
        &self,
        key: SegmentKey,
        volume_epoch: VolumeEpoch,
        membership_epoch: MembershipEpoch,
        records: Vec<Record>,
    ) -> Reply {
        let SegmentKey { volume, pg } = key;
        if let Some(reply) = check_batch(key, &records) {
            return reply;
        }
        let fenced = self.volume_fence(volume);
        if volume_epoch < fenced {
            return stale_epoch(key, volume_epoch, fenced);
        }
        if let Some(reply) = self.check_membership(key, membership_epoch) {
            return reply;
        }
        // Batches still being written count as held: a batch of an older epoch than one
        // in flight is stale, and a first batch of a new epoch must not overtake an older
        // one still in flight (it would be taken without the truncation range that
        // annuls the older records).
        let (oldest, newest) = self.appending.borrow().get(&key).map_or((None, None), |m| {
            (m.keys().next().copied(), m.keys().next_back().copied())
        });
        if let Some(newest) = newest.filter(|e| volume_epoch < *e) {
            return stale_epoch(key, volume_epoch, newest);
        }
        let (held_epoch, needs_truncation) = match self.segments.borrow().get(&key) {
            Some(seg) => (
                seg.volume_epoch,
                seg.needs_truncation_for(volume_epoch)
                    || oldest.is_some_and(|e| e < volume_epoch)
                        && !seg.has_truncation(volume_epoch),
            ),
            None => (VolumeEpoch(0), oldest.is_some_and(|e| e < volume_epoch)),
        };
        if volume_epoch < held_epoch {
            return stale_epoch(key, volume_epoch, held_epoch);
        }
        if needs_truncation {
            return Reply::error(
                ErrorCode::TruncationNeeded,
                saturate(held_epoch),
                format!(
                    "volume {volume} pg {pg}: holds records of epochs below {volume_epoch} and no truncation range of epoch {volume_epoch}; send Truncate first"
                ),
            );
        }
        self.last_append.set(self.clock.now());
        self.wait_for_log_space().await;
        let durable_lsn = records.last().expect("batch checked non-empty").lsn;
        let bytes: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        let count = records.len() as u64;
        let entries = records
            .into_iter()
            .map(|record| Entry {
                segment: key,
                volume_epoch,
                membership_epoch,
                record,
            })
            .collect();
        let in_flight = InFlight::new(&self.appending, key, volume_epoch);
        let appended = self.log.append(entries).await;
        drop(in_flight);
        match appended {
            Ok(()) => {
                // A volume open may have fenced this segment while the batch was
                // being written: the records stay (a truncation range annuls them),
                // but the old writer must not count this node toward its quorum.
                let seg_epoch = self
                    .segments
                    .borrow()
                    .get(&key)
                    .map_or(VolumeEpoch(0), |s| s.volume_epoch);
                let now = seg_epoch.max(self.volume_fence(volume));
                if now > volume_epoch {
                    return stale_epoch(key, volume_epoch, now);
                }
                // Likewise a membership step: a node that took it acks no batch of
                // the epoch before (`hexad_client::membership`).
                if let Some(reply) = self.check_membership(key, membership_epoch) {
                    return reply;
                }
                self.records_appended
                    .set(self.records_appended.get() + count);
                self.bytes_appended.set(self.bytes_appended.get() + bytes);
                self.batches_acked.set(self.batches_acked.get() + 1);
                let scl = self
                    .segments
                    .borrow()
                    .get(&key)
                    .map_or(Lsn::NONE, Segment::scl);
                Reply::ok(Message::AppendAck {
                    volume,
                    pg,
                    durable_lsn,
                    scl,
                })
            }
            Err(e @ LogError::Full(_)) => Reply::error(ErrorCode::HotLogFull, 0, e.to_string()),
            Err(e) => Reply::error(ErrorCode::Io, 0, e.to_string()),
        }
    }

    /// Every request but appends and page reads.
    async fn handle_control(&self, msg: Message) -> Reply {
        match msg {
            Message::Hello { protocol_version } if protocol_version == PROTOCOL_VERSION => Reply::ok(Message::HelloOk {
                protocol_version: PROTOCOL_VERSION,
                node_id: self.id.node_id,
                shard: self.id.shard,
                shard_ports: self.id.shard_ports.clone(),
            }),
            Message::Hello { protocol_version } => Reply::error(
                ErrorCode::BadFrame,
                0,
                format!("protocol version {protocol_version} is not supported; this node speaks {PROTOCOL_VERSION}"),
            ),
            Message::GetSegmentState { volume, pg } => {
                let key = SegmentKey { volume, pg };
                match self.segments.borrow().get(&key) {
                    Some(seg) => Reply::ok(Message::SegmentState {
                        volume,
                        pg,
                        scl: seg.scl(),
                        highest_lsn: seg.highest_lsn(),
                        record_count: seg.record_count(),
                        volume_epoch: seg.volume_epoch,
                        membership_epoch: seg.membership_epoch(),
                    }),
                    None => no_such_segment(key),
                }
            }
            Message::FetchRecords {
                volume,
                pg,
                after_lsn,
                to_lsn,
                max_bytes,
            } => {
                let key = SegmentKey { volume, pg };
                self.fetch(key, after_lsn, to_lsn, max_bytes).await
            }
            Message::GetStats => Reply::ok(Message::Stats(self.stats())),
            Message::FetchIndex {
                volume,
                pg,
                after_lsn,
                to_lsn,
                max_entries,
            } => {
                let key = SegmentKey { volume, pg };
                let limit = (max_entries as usize).clamp(1, MAX_INDEX_ENTRIES);
                let segs = self.segments.borrow();
                let Some(seg) = segs.get(&key) else {
                    return no_such_segment(key);
                };
                if after_lsn < seg.floor() {
                    return below_floor(key, after_lsn, seg.floor());
                }
                let mut range = seg.range(after_lsn, to_lsn);
                let entries: Vec<IndexEntry> = range
                    .by_ref()
                    .take(limit)
                    .map(|(lsn, m)| IndexEntry {
                        lsn,
                        prev_lsn_pg: m.prev_lsn_pg,
                        cpl: m.cpl,
                    })
                    .collect();
                Reply::ok(Message::Index {
                    volume,
                    pg,
                    more: range.next().is_some(),
                    entries,
                })
            }
            Message::ListSegments { volume } => self.list(volume),
            Message::Progress {
                volume,
                vdl,
                pgmrpl,
                pgs,
            } => {
                let mut all = self.progress.borrow_mut();
                let p = all.entry(volume).or_default();
                if vdl >= p.vdl {
                    p.vdl = vdl;
                    for (pg, lsn) in pgs {
                        let c = p.complete.entry(pg).or_default();
                        *c = (*c).max(lsn);
                    }
                }
                p.pgmrpl = p.pgmrpl.max(pgmrpl.min(p.vdl));
                Reply::ok(Message::ProgressAck { volume })
            }
            Message::PullRecords {
                volume,
                pg,
                membership_epoch,
                after_lsn,
                to_lsn,
                max_bytes,
            } => {
                let key = SegmentKey { volume, pg };
                self.pull_records(key, membership_epoch, after_lsn, to_lsn, max_bytes)
                    .await
            }
            Message::GetBaseline {
                volume,
                pg,
                membership_epoch,
                pin,
                from_extent,
                max_bytes,
            } => {
                let key = SegmentKey { volume, pg };
                self.serve_baseline(key, membership_epoch, pin, from_extent, max_bytes)
                    .await
            }
            Message::GetMembership { volume, pg } => {
                self.get_membership(SegmentKey { volume, pg })
            }
            Message::SetMembership {
                volume,
                pg,
                membership,
            } => self.set_membership(SegmentKey { volume, pg }, membership).await,
            Message::GetSegmentStats => Reply::ok(Message::SegmentStats {
                segments: self.segment_stats(),
            }),
            Message::ClaimReaderSlot {
                volume,
                reader,
                slot,
                release,
            } => {
                self.claim_reader_slot(volume, reader, slot, release)
            }
            Message::Fence {
                volume,
                pg,
                epoch,
                mode,
            } => {
                let key = SegmentKey { volume, pg };
                self.fence(key, epoch, mode).await
            }
            Message::Truncate {
                volume,
                pg,
                truncation,
            } => {
                let key = SegmentKey { volume, pg };
                self.truncate(key, truncation).await
            }
            other => Reply::error(
                ErrorCode::UnknownKind,
                u32::from(other.kind()),
                format!("message kind {} is a reply, not a request", other.kind()),
            ),
        }
    }

    fn check_owner(&self, key: SegmentKey) -> Option<Reply> {
        let shards = self.id.shard_ports.len() as u16;
        let owner = segment_shard(key.volume, key.pg, shards);
        (owner != self.id.shard).then(|| {
            Reply::error(
                ErrorCode::WrongShard,
                u32::from(owner.0),
                format!(
                    "volume {} pg {} belongs to shard {owner} (port {}), not shard {}",
                    key.volume,
                    key.pg,
                    self.id.shard_ports[usize::from(owner.0)],
                    self.id.shard
                ),
            )
        })
    }

    pub(crate) fn writer_vdl(&self, volume: VolumeId) -> Lsn {
        self.progress
            .borrow()
            .get(&volume)
            .map_or(Lsn::NONE, |p| p.vdl)
    }

    fn list(&self, volume: VolumeId) -> Reply {
        let segs = self.segments.borrow();
        let mine: Vec<&Segment> = segs.values().filter(|s| s.key.volume == volume).collect();
        let mut pgs: Vec<_> = mine.iter().map(|s| s.key.pg).collect();
        pgs.sort_unstable();
        Reply::ok(Message::SegmentList {
            volume,
            max_epoch: mine
                .iter()
                .map(|s| s.volume_epoch)
                .max()
                .unwrap_or_default()
                .max(self.volume_fence(volume)),
            pgs,
        })
    }

    pub(crate) async fn fetch(
        &self,
        key: SegmentKey,
        after: Lsn,
        to: Lsn,
        max_bytes: u32,
    ) -> Reply {
        let budget = (max_bytes as usize).clamp(1, MAX_FETCH_REPLY_BYTES);
        let wanted: Vec<_> = match self.segments.borrow().get(&key) {
            Some(seg) if after < seg.floor() => return below_floor(key, after, seg.floor()),
            Some(seg) => seg.range(after, to).collect(),
            None => return no_such_segment(key),
        };
        let mut take = 0;
        let mut bytes = 0usize;
        for (_, meta) in &wanted {
            if take > 0 && bytes + meta.loc.bytes as usize > budget {
                break;
            }
            bytes += meta.loc.bytes as usize;
            take += 1;
        }
        let more = take < wanted.len();
        let locs: Vec<_> = wanted[..take].iter().map(|(_, m)| m.loc).collect();
        let mut records: Vec<Record> = Vec::with_capacity(take);
        for ((lsn, meta), read) in wanted[..take]
            .iter()
            .zip(self.log.read_records(&locs).await)
        {
            match read {
                Ok(rec) if rec.lsn == *lsn => records.push(rec),
                Ok(rec) => {
                    return Reply::error(
                        ErrorCode::Internal,
                        0,
                        format!(
                            "index says LSN {lsn} at {:?} but the log holds LSN {}",
                            meta.loc, rec.lsn
                        ),
                    )
                }
                Err(e) => return Reply::error(ErrorCode::Io, 0, e.to_string()),
            }
        }
        Reply::ok(Message::Records {
            volume: key.volume,
            pg: key.pg,
            more,
            records,
        })
    }

    pub fn stats(&self) -> NodeStats {
        let log = self.log.stats();
        NodeStats {
            records_appended: self.records_appended.get(),
            bytes_appended: self.bytes_appended.get(),
            batches_acked: self.batches_acked.get(),
            log_blocks_written: log.blocks_written,
            log_bytes_written: log.bytes_written,
            log_syncs: log.syncs,
            corrupt_blocks: self.corrupt_blocks,
            segments: self.segments.borrow().len() as u64,
            page_versions_written: self.page_versions_written.get(),
            page_writes: self.page_writes.get(),
            chain_reads: self.chain_reads.get(),
            gossip_records_pulled: self.gossip_records_pulled.get(),
            gossip_bytes_pulled: self.gossip_bytes_pulled.get(),
            rebuild_pages_copied: self.rebuild_pages_copied.get(),
            rebuild_bytes_copied: self.rebuild_bytes_copied.get(),
            repair_chunks_rejected: self.repair_chunks_rejected.get(),
            records_coalesced: self.records_coalesced.get(),
            corrupt_page_versions: self.corrupt_page_versions.get(),
            pages_pending: self
                .segments
                .borrow()
                .values()
                .map(|s| s.pages_pending() as u64)
                .sum(),
            backpressure_waits: self.backpressure_waits.get(),
            hot_log_files_free: u64::from(self.log.files_free()),
            hot_log_files: u64::from(self.log.file_count()),
            process_cpu_us: if self.id.shard == ShardId(0) {
                crate::usage::process_cpu_us()
            } else {
                0
            },
        }
    }
}

/// The segment a request is about (a reader slot's is PG 0's), whose owning shard must
/// answer it.
fn request_segment(msg: &Message) -> Option<SegmentKey> {
    match *msg {
        Message::AppendBatch { volume, pg, .. }
        | Message::GetSegmentState { volume, pg }
        | Message::FetchRecords { volume, pg, .. }
        | Message::GetPage { volume, pg, .. }
        | Message::FetchIndex { volume, pg, .. }
        | Message::PullRecords { volume, pg, .. }
        | Message::GetBaseline { volume, pg, .. }
        | Message::Fence { volume, pg, .. }
        | Message::GetMembership { volume, pg }
        | Message::SetMembership { volume, pg, .. }
        | Message::Truncate { volume, pg, .. } => Some(SegmentKey { volume, pg }),
        Message::ClaimReaderSlot { volume, .. } => Some(SegmentKey {
            volume,
            pg: PgIndex(0),
        }),
        _ => None,
    }
}

/// Checks what a decoded batch cannot prove by itself: non-empty, every page inside the
/// PG, LSNs strictly increasing.
fn check_batch(key: SegmentKey, records: &[Record]) -> Option<Reply> {
    if records.is_empty() {
        return Some(Reply::error(
            ErrorCode::Malformed,
            0,
            "AppendBatch holds no records".into(),
        ));
    }
    let mut prev = Lsn::NONE;
    for r in records {
        if !key.pg.contains(r.page) {
            return Some(Reply::error(
                ErrorCode::RecordOutsidePg,
                0,
                format!(
                    "record LSN {} is for page {} (pg {}), outside pg {} of the batch",
                    r.lsn,
                    r.page,
                    r.page.pg(),
                    key.pg
                ),
            ));
        }
        if r.lsn <= prev {
            return Some(Reply::error(
                ErrorCode::InvalidLsn,
                0,
                format!(
                    "record LSNs must increase within a batch: {} follows {prev}",
                    r.lsn
                ),
            ));
        }
        prev = r.lsn;
    }
    None
}

fn apply(segments: &mut HashMap<SegmentKey, Segment>, r: &DurableRecord) {
    let seg = segments
        .entry(r.segment)
        .or_insert_with(|| Segment::new(r.segment));
    seg.observe_epoch(r.volume_epoch);
    seg.insert(RecordMeta {
        lsn: r.lsn,
        prev_lsn_pg: r.prev_lsn_pg,
        page_link: r.page_link,
        epoch: r.volume_epoch,
        cpl: r.cpl,
        page: r.page,
        loc: r.loc,
    });
}

fn rebuild(segments: &Segments, recovery: &Recovery) -> OpenReport {
    let mut segs = segments.borrow_mut();
    for e in &recovery.entries {
        apply(
            &mut segs,
            &DurableRecord {
                segment: e.entry.segment,
                volume_epoch: e.entry.volume_epoch,
                membership_epoch: e.entry.membership_epoch,
                lsn: e.entry.record.lsn,
                prev_lsn_pg: e.entry.record.prev_lsn_pg,
                page_link: e.entry.record.page_link(),
                cpl: e.entry.record.cpl,
                page: e.entry.record.page,
                loc: e.loc,
            },
        );
    }
    OpenReport {
        records: recovery.entries.len(),
        segments: segs.len(),
        blocks: recovery.blocks,
        corruption: recovery.corruption.clone(),
    }
}

mod in_flight;
mod persist;
pub mod sim;
#[cfg(test)]
mod tests;
