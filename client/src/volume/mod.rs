//! The writer's view of a volume: allocate LSNs, fan records out to the 6 segments of each
//! PG, count acks in the quorum core, and resolve commits once VDL passes them.
//!
//! Runs inside a glommio executor (the database engine's I/O thread); nothing here blocks.
//! [`Volume::open`] recovers the volume from storage and fences older writers first (see
//! [`recovery`]); [`Volume::attach_reader`] does the read-only half of that.

mod members;
mod peer;
mod pipelined;
mod read;
mod reader;
pub mod recovery;
mod rpc;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use peer::Peer;
pub use peer::PeerStats;
pub use pipelined::Pipelined;
use read::Asked;
pub use read::PageRead;
pub use reader::VolumeReader;
pub use recovery::{Recovered, RecoveryStep};

use crate::membership::MemberSets;
use crate::placement::{segment_shard, ClusterMap, PG_MEMBERS};
use crate::quorum::{BackPressure, QuorumConfig, QuorumCore};
use crate::sync::Notify;
use crate::types::{Lsn, MembershipEpoch, NodeId, PageNo, PgIndex, ShardId, VolumeId, MAX_PGS};
use crate::wire::{Message, Op, PageLink, Record};

/// How often a back-pressured append re-checks whether retained records have aged out.
const RELEASE_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct VolumeConfig {
    pub volume: VolumeId,
    pub quorum: QuorumConfig,
    /// An unacknowledged request older than this breaks its connection (which reconnects
    /// and resends).
    pub request_timeout: Duration,
    /// `wait_durable` and back-pressured `append` give up after this.
    pub quorum_timeout: Duration,
    pub connect_timeout: Duration,
    /// Shards per node where the cluster file does not say.
    pub default_shards: u16,
    /// Opening gives up after this while quorums are out of reach (it retries meanwhile).
    pub open_timeout: Duration,
    /// Called with a line of news while an open waits (e.g. for a write quorum).
    pub progress: Option<fn(&str)>,
    /// Tests only: end the open after this step, as if the process died there.
    pub stop_after: Option<RecoveryStep>,
    /// The min read point from the start (see [`Volume::set_min_read_point`]); `None`
    /// follows VDL. Nodes coalesce records into pages, and may drop them from their logs,
    /// only below it.
    pub min_read_point: Option<Lsn>,
    /// Where connections go: TCP, or a simulation's in-memory network.
    pub network: crate::net::Network,
}

impl VolumeConfig {
    pub fn new(volume: VolumeId) -> VolumeConfig {
        VolumeConfig {
            volume,
            quorum: QuorumConfig::default(),
            request_timeout: Duration::from_secs(2),
            quorum_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            default_shards: 1,
            open_timeout: Duration::from_mins(1),
            progress: None,
            stop_after: None,
            min_read_point: None,
            network: crate::net::Network::Tcp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("quorum unavailable: LSN {lsn} is not durable after {waited_ms} ms; {detail}")]
    QuorumUnavailable {
        lsn: Lsn,
        waited_ms: u64,
        detail: String,
    },
    #[error("page {0} is beyond the largest volume ({MAX_PGS} PGs, 128 TiB)")]
    PageOutOfRange(PageNo),
    #[error("a mini-transaction needs at least one record")]
    EmptyMiniTransaction,
    #[error("cannot open the volume after {waited_ms} ms: {detail}")]
    OpenFailed { waited_ms: u64, detail: String },
    #[error("this writer is fenced: a newer open of the volume took over ({0})")]
    Fenced(String),
    #[error("open stopped after step {step:?} (recovered VDL {vdl}), as configured")]
    Stopped { step: RecoveryStep, vdl: Lsn },
    #[error("reading PG {pg}: {detail}")]
    ReadFailed { pg: PgIndex, detail: String },
    #[error("no reader slot: {0}")]
    TooManyReaders(String),
}

/// One redo record of a mini-transaction, before it has an LSN.
#[derive(Debug, Clone)]
pub struct Change {
    pub page: PageNo,
    pub op: Op,
    pub payload: Bytes,
}

pub(crate) struct Inner {
    cfg: VolumeConfig,
    cluster: ClusterMap,
    recovered: Recovered,
    /// Set when a node refused this writer's epoch: every later call fails.
    fenced: RefCell<Option<String>>,
    /// The engine's oldest read point (PGMRPL); `None` follows VDL.
    min_read_point: Cell<Option<Lsn>>,
    /// The quorum arithmetic, and each PG's membership as the writer counts it
    /// (`membership.rs`; refreshed from the nodes when one answers `StaleMembership`).
    core: RefCell<QuorumCore>,
    /// PGs a node said have a newer membership than `members`, with the epoch it named.
    stale_members: RefCell<HashMap<PgIndex, MembershipEpoch>>,
    /// Set while one task asks the nodes for newer memberships; others wait for it.
    refreshing: Cell<bool>,
    members_changed: Notify,
    peers: RefCell<HashMap<(NodeId, ShardId), Rc<Peer>>>,
    /// Records kept for resending until the core releases them.
    retained: RefCell<BTreeMap<Lsn, (PgIndex, Record)>>,
    /// Last LSN per page, for `prev_lsn_page`. Unbounded until PGMRPL (issue #4) lets it
    /// forget pages below the read point.
    page_heads: RefCell<HashMap<PageNo, Lsn>>,
    vdl_changed: Notify,
}

/// A volume open for writing.
pub struct Volume {
    inner: Rc<Inner>,
}

impl Volume {
    /// Opens `cfg.volume` for writing: recovers its state from a read quorum of every PG,
    /// truncates the ragged edge, fences every older writer, and returns ready to append
    /// above the truncation range. A volume nobody wrote before starts at LSN 1. Waits (up
    /// to `open_timeout`) while a write quorum is out of reach.
    ///
    /// After an open the writer does not know each page's last LSN, so the first record
    /// it writes to a page links back with a bound, [`PageLink::AtMost`] the recovered VDL.
    pub async fn open(cluster: ClusterMap, cfg: VolumeConfig) -> Result<Volume, VolumeError> {
        let recovered = recovery::Opener::new(&cluster, &cfg, true, cfg.stop_after)
            .open()
            .await?;
        let mut core = QuorumCore::new(cfg.quorum, recovered.allocate_after);
        for (pg, state) in &recovered.pgs {
            core.add_pg(*pg, state.members, state.tail);
        }
        let min_read_point = cfg.min_read_point;
        Ok(Volume {
            inner: Rc::new(Inner {
                cfg,
                cluster,
                recovered,
                fenced: RefCell::default(),
                min_read_point: Cell::new(min_read_point),
                core: RefCell::new(core),
                stale_members: RefCell::default(),
                refreshing: Cell::new(false),
                members_changed: Notify::default(),
                peers: RefCell::default(),
                retained: RefCell::default(),
                page_heads: RefCell::default(),
                vdl_changed: Notify::default(),
            }),
        })
    }

    /// Attaches a read-only reader to `cfg.volume` (DESIGN §6): up to
    /// [`crate::MAX_READERS`] besides the writer, in any process. See [`VolumeReader`].
    pub async fn attach_reader(
        cluster: ClusterMap,
        cfg: VolumeConfig,
    ) -> Result<VolumeReader, VolumeError> {
        VolumeReader::attach(cluster, cfg).await
    }

    /// Reads `page` as of `read_point` (default: the current VDL) from **one** segment: the
    /// lowest-latency member whose acknowledged SCL covers the read point. If it has not
    /// answered after twice its smoothed latency (at least `HEDGE_MIN`), the next one is
    /// asked too, and the first answer wins; a segment that cannot answer (not complete,
    /// an error) hands over at once. No quorum read.
    pub async fn read_page(
        &self,
        page: PageNo,
        read_point: Option<Lsn>,
    ) -> Result<PageRead, VolumeError> {
        let inner = &self.inner;
        inner.check_fenced()?;
        let pg = page.pg();
        if pg.0 >= MAX_PGS {
            return Err(VolumeError::PageOutOfRange(page));
        }
        let read = read_point.unwrap_or_else(|| inner.core.borrow().vdl());
        let Some(members) = inner.core.borrow().membership(pg).map(|m| m.nodes()) else {
            // Nothing was ever written to this PG.
            return Ok(PageRead {
                page_lsn: Lsn::NONE,
                data: Bytes::from(vec![0u8; crate::types::PAGE_BYTES]),
                node: NodeId(0),
                hedged: false,
            });
        };
        let complete = inner.core.borrow().complete_point(pg, read).unwrap_or(read);
        let mut candidates: Vec<(bool, Duration, Rc<Peer>)> = {
            let core = inner.core.borrow();
            members
                .iter()
                .map(|n| {
                    let covers = core.member_scl(pg, *n).is_some_and(|s| s >= complete);
                    let peer = inner.peer(*n, pg);
                    (!(covers && peer.is_connected()), peer.latency(), peer)
                })
                .collect()
        };
        candidates.sort_by_key(|(worse, latency, _)| (*worse, *latency));
        // The page's last record at or below the read point, when the writer knows it: a
        // segment short of `complete` may still prove the page complete by its chain.
        let page_head = inner
            .page_heads
            .borrow()
            .get(&page)
            .copied()
            .filter(|h| *h <= read)
            .unwrap_or(Lsn::NONE);
        let request = Message::GetPage {
            volume: inner.cfg.volume,
            pg,
            page,
            read_lsn: read,
            complete_lsn: complete,
            page_head,
        };
        let ask = |i: usize| -> Asked {
            let peer: &Rc<Peer> = &candidates[i].2;
            (peer.node, Box::pin(peer.request(request.clone())))
        };
        read::hedged(
            candidates.len(),
            candidates[0].1,
            inner.cfg.request_timeout,
            ask,
        )
        .await
        .map_err(|failures| VolumeError::ReadFailed {
            pg,
            detail: format!("page {page} at {read}: {}", failures.join("; ")),
        })
    }

    /// Promises the nodes that no read of this volume (the writer's or a reader's) will ask
    /// for a read point below `lsn` (PGMRPL): they may then coalesce and drop what lies
    /// below it, and answer older reads with `TooOld`. `None` (the default) follows VDL.
    /// Sent to the nodes with the writer's VDL (`Progress`): every 10 ms while batches flow,
    /// within 10 ms of VDL moving when a connection is idle.
    pub fn set_min_read_point(&self, lsn: Option<Lsn>) {
        self.inner.min_read_point.set(lsn);
    }

    /// What the open found and did: epoch, recovered VCL/VDL, truncation range, timings.
    pub fn recovery(&self) -> &Recovered {
        &self.inner.recovered
    }

    /// Appends a mini-transaction; its last record carries CPL. Returns the commit LSN to
    /// pass to [`Volume::wait_durable`]. Does not wait unless back-pressured (LAL or the
    /// retained-bytes budget), and then at most `quorum_timeout`.
    pub async fn append(&self, changes: &[Change]) -> Result<Lsn, VolumeError> {
        let Some(last) = changes.len().checked_sub(1) else {
            return Err(VolumeError::EmptyMiniTransaction);
        };
        let inner = &self.inner;
        inner.check_fenced()?;
        if let Some(c) = changes.iter().find(|c| c.page.pg().0 >= MAX_PGS) {
            return Err(VolumeError::PageOutOfRange(c.page));
        }
        let record_bytes = |c: &Change| (crate::wire::RECORD_HEADER_BYTES + c.payload.len()) as u64;
        let total: u64 = changes.iter().map(record_bytes).sum();
        let started = Instant::now();
        loop {
            let room = inner.core.borrow().room_for(changes.len() as u64, total);
            match room {
                Ok(()) => break,
                Err(bp) => self.wait_for_room(bp, started).await?,
            }
        }
        // No await from here on: the mini-transaction's LSNs are contiguous.
        let mut commit = Lsn::NONE;
        for (i, c) in changes.iter().enumerate() {
            let pg = c.page.pg();
            let members = inner.members_of(pg).nodes();
            let alloc = inner
                .core
                .borrow_mut()
                .allocate(pg, i == last, record_bytes(c), Instant::now())
                .expect("room for the whole mini-transaction was checked");
            // A page not written since the open: its last record is at or below the VDL
            // the open recovered (everything above it was truncated).
            let link = match inner.page_heads.borrow_mut().insert(c.page, alloc.lsn) {
                Some(prev) => PageLink::Exact(prev),
                None if inner.recovered.vdl == Lsn::NONE => PageLink::Exact(Lsn::NONE),
                None => PageLink::AtMost(inner.recovered.vdl),
            };
            let record = Record::linked(
                alloc.lsn,
                alloc.prev_lsn_pg,
                link,
                c.page,
                c.op,
                i == last,
                &c.payload,
            );
            inner
                .retained
                .borrow_mut()
                .insert(alloc.lsn, (pg, record.clone()));
            for node in members {
                inner.peer(node, pg).enqueue(pg, record.clone());
            }
            commit = alloc.lsn;
        }
        Ok(commit)
    }

    /// Waits for room after back-pressure: acks that move VDL, or retained records aging out
    /// (which no ack may trigger while the writer is stalled, so poll every `RELEASE_TICK`).
    async fn wait_for_room(&self, bp: BackPressure, started: Instant) -> Result<(), VolumeError> {
        self.inner.check_fenced()?;
        let limit = self.inner.cfg.quorum_timeout;
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            let lsn = Lsn(self.inner.core.borrow().vdl().0 + 1);
            return Err(self
                .inner
                .unavailable(lsn, started, &format!("back-pressured: {bp}")));
        }
        let tick = glommio::timer::sleep(left.min(RELEASE_TICK));
        futures_lite::future::or(self.inner.vdl_changed.notified(), tick).await;
        self.inner.release();
        Ok(())
    }

    /// Resolves once VDL ≥ `lsn`, i.e. the mini-transaction ending at `lsn` and everything
    /// before it are durable on a write quorum. Fails with `QuorumUnavailable`, naming the PG
    /// and the nodes behind, after `quorum_timeout`.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), VolumeError> {
        let started = Instant::now();
        loop {
            self.inner.check_fenced()?;
            if self.inner.core.borrow().vdl() >= lsn {
                return Ok(());
            }
            let left = self
                .inner
                .cfg
                .quorum_timeout
                .saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(self.inner.unavailable(lsn, started, ""));
            }
            futures_lite::future::or(
                self.inner.vdl_changed.notified(),
                glommio::timer::sleep(left),
            )
            .await;
        }
    }

    /// The volume durable LSN. Right after an open that truncated, this is the end of the
    /// truncation range (nothing lies in it); [`Volume::recovery`] has the VDL recovered.
    pub fn vdl(&self) -> Lsn {
        self.inner.core.borrow().vdl()
    }

    pub fn vcl(&self) -> Lsn {
        self.inner.core.borrow().vcl()
    }

    /// The 6 nodes of a PG (during a replacement, the set it started from; see
    /// [`Volume::membership`]).
    pub fn members(&self, pg: PgIndex) -> [NodeId; PG_MEMBERS] {
        self.inner.members_of(pg).old
    }

    /// The PG's membership as this writer counts quorums: epoch and set(s).
    pub fn membership(&self, pg: PgIndex) -> MemberSets {
        self.inner.members_of(pg)
    }

    /// Per segment of `pg`: each member and the SCL it last reported (its acknowledged LSN:
    /// it holds every record of the PG up to there).
    pub fn segment_scls(&self, pg: PgIndex) -> Vec<(NodeId, Lsn)> {
        let members = self.inner.members_of(pg).nodes();
        let core = self.inner.core.borrow();
        members
            .iter()
            .map(|n| (*n, core.member_scl(pg, *n).unwrap_or(Lsn::NONE)))
            .collect()
    }

    /// Per-connection state: connected, acks, latency estimate, last error.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let mut out: Vec<PeerStats> = self
            .inner
            .peers
            .borrow()
            .values()
            .map(|p| p.stats())
            .collect();
        out.sort_by_key(|s| (s.node, s.shard));
        out
    }
}

impl Inner {
    fn pgmrpl(&self) -> Lsn {
        let vdl = self.core.borrow().vdl();
        self.min_read_point.get().map_or(vdl, |l| l.min(vdl))
    }

    /// The `Progress` message for one (node, shard): VDL, PGMRPL, and for each PG it serves
    /// the PG's last record at or below VDL.
    fn progress_for(&self, node: NodeId, shard: ShardId) -> Message {
        let core = self.core.borrow();
        let vdl = core.vdl();
        let pgs = core
            .memberships()
            .filter(|(pg, m)| m.contains(node) && self.shard_of(node, *pg) == shard)
            .filter_map(|(pg, _)| Some((pg, core.complete_point(pg, vdl)?)))
            .collect();
        Message::Progress {
            volume: self.cfg.volume,
            vdl,
            pgmrpl: self.pgmrpl(),
            pgs,
        }
    }

    fn check_fenced(&self) -> Result<(), VolumeError> {
        match &*self.fenced.borrow() {
            Some(why) => Err(VolumeError::Fenced(why.clone())),
            None => Ok(()),
        }
    }

    fn set_fenced(&self, why: String) {
        self.fenced.borrow_mut().get_or_insert(why);
        self.vdl_changed.notify();
    }

    /// The Truncate requests a (node, shard) must take before this writer's records: one
    /// per PG of the volume it serves. None for a volume this writer created.
    fn truncations_for(&self, node: NodeId, shard: ShardId) -> Vec<Message> {
        let Some(t) = self.recovered.truncation else {
            return Vec::new();
        };
        let mut pgs: Vec<PgIndex> = self
            .core
            .borrow()
            .memberships()
            .filter(|(pg, m)| m.contains(node) && self.shard_of(node, *pg) == shard)
            .map(|(pg, _)| pg)
            .collect();
        pgs.sort_unstable();
        pgs.into_iter()
            .map(|pg| Message::Truncate {
                volume: self.cfg.volume,
                pg,
                truncation: t,
            })
            .collect()
    }

    /// The PG's membership; a PG new to the writer starts on the placement default.
    fn members_of(&self, pg: PgIndex) -> MemberSets {
        if let Some(m) = self.core.borrow().membership(pg) {
            return m;
        }
        let placement = self.cluster.pg_members(self.cfg.volume, pg);
        let m = MemberSets::stable(MembershipEpoch::PLACEMENT, placement);
        self.core.borrow_mut().add_pg(pg, m, Lsn::NONE);
        m
    }

    fn shard_of(&self, node: NodeId, pg: PgIndex) -> ShardId {
        let shards = self
            .cluster
            .node(node)
            .and_then(|n| n.shards)
            .unwrap_or(self.cfg.default_shards);
        segment_shard(self.cfg.volume, pg, shards)
    }

    fn peer(self: &Rc<Self>, node: NodeId, pg: PgIndex) -> Rc<Peer> {
        let shard = self.shard_of(node, pg);
        if let Some(p) = self.peers.borrow().get(&(node, shard)) {
            return p.clone();
        }
        let entry = self
            .cluster
            .node(node)
            .expect("members come from the cluster map");
        let peer = Peer::new(node, shard, entry.shard_addr(shard));
        self.peers.borrow_mut().insert((node, shard), peer.clone());
        glommio::spawn_local(peer.clone().run(Rc::downgrade(self))).detach();
        peer
    }

    fn on_ack(&self, pg: PgIndex, node: NodeId, scl: Lsn) {
        let before = self.core.borrow().vdl();
        let after = self.core.borrow_mut().on_ack(pg, node, scl);
        self.release();
        if after > before {
            self.vdl_changed.notify();
        }
    }

    /// Drops the records the core no longer needs for resending.
    fn release(&self) {
        let released = self.core.borrow_mut().release(Instant::now());
        let mut retained = self.retained.borrow_mut();
        for lsn in released {
            retained.remove(&lsn);
        }
    }

    /// Retained records a (node, shard) should hold but has not acknowledged, in LSN order.
    fn missing_for(&self, node: NodeId, shard: ShardId) -> Vec<(PgIndex, Record)> {
        let core = self.core.borrow();
        self.retained
            .borrow()
            .iter()
            .filter(|(lsn, (pg, _))| {
                self.shard_of(node, *pg) == shard
                    && core.member_scl(*pg, node).is_some_and(|scl| scl < **lsn)
            })
            .map(|(_, (pg, r))| (*pg, r.clone()))
            .collect()
    }

    fn unavailable(&self, lsn: Lsn, started: Instant, extra: &str) -> VolumeError {
        let core = self.core.borrow();
        let mut detail = String::new();
        for (pg, m) in core.memberships() {
            let lagging = core.lagging(pg);
            if !m.write_quorum(|n| !lagging.contains(&n)) {
                let errors: Vec<String> = self
                    .peers
                    .borrow()
                    .values()
                    .filter(|p| lagging.contains(&p.node))
                    .filter_map(|p| {
                        p.stats()
                            .last_error
                            .map(|e| format!("node {}: {e}", p.node))
                    })
                    .collect();
                let _ = write!(
                    detail,
                    "PG {pg} has no write quorum; nodes behind: {lagging:?} ({}); ",
                    errors.join("; ")
                );
            }
        }
        VolumeError::QuorumUnavailable {
            lsn,
            waited_ms: started.elapsed().as_millis() as u64,
            detail: format!("{detail}{extra}"),
        }
    }
}
