//! Volume open (DESIGN §7): rebuild the volume's state from storage alone, cut the ragged
//! edge, and fence every older writer. No redo is replayed: segments own their pages.
//!
//! ```text
//!  list     every shard: which PGs of the volume it holds, and the highest epoch seen
//!  fence    PG 0: compare-and-set the new epoch on a write quorum (4/6), so two opens can
//!           never both win; every other PG: raise the epoch on the members that answer.
//!           A writer of an older epoch can then get at most 2 acks anywhere: fenced.
//!  compute  per PG, from ≥ 3 segments: PGCL = highest (clipped) SCL; fetch the records
//!           above `base` from that segment; VCL = end of the dense LSN run above `base`;
//!           VDL = highest CPL ≤ VCL
//!  truncate every reachable member: range (VDL, VDL + LAL] stamped with the new epoch,
//!           then re-replicate the PG's records up to its tail where the member lacks them;
//!           needs 4 complete members per PG
//!  seal     mark the range sealed on every reachable member: from now on a later open may
//!           start from `base = VDL` and skip the range's LSNs, which nobody will use
//! ```
//! Two facts make the rest work. LSNs are dense per writer (every LSN up to the last one
//! allocated belongs to exactly one record), and a writer never allocates below
//! `VDL + LAL` of the open that started it, so an LSN names at most one record ever.
//! And a node that holds records of epoch E also holds E's truncation range (nodes refuse
//! E's records until it arrives), so a segment that lacks the newest range S* holds only
//! records older than S*: its chain is trusted up to `S*.start` and no further.
//!
//! Any step may fail or the process may die; a later open repeats everything with a new
//! epoch. Once the truncation step has completed, a later open finds the same VDL (the
//! range's epoch is the newest any read quorum sees, and every record ≤ VDL is on 4/6).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod fence;
mod list;
mod state;

use super::peer::append_batches;
use super::rpc::Rpc;
use super::{VolumeConfig, VolumeError};
use crate::membership::MemberSets;
use crate::placement::{segment_shard, ClusterMap};
use crate::quorum::WRITE_QUORUM;
use crate::types::{Lsn, MembershipEpoch, NodeId, PgIndex, ShardId, VolumeEpoch};
use crate::wire::message::MAX_INDEX_ENTRIES;
use crate::wire::{IndexEntry, Message, Record, SegmentView, Truncation};
use state::{compute, OpenState};

pub use crate::membership::READ_QUORUM;
/// Bytes asked for per `FetchRecords` reply.
const FETCH_BYTES: u32 = 4 << 20;
/// Pause between open attempts while a quorum is out of reach.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Where to stop an open, to test that a later open repeats it correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    /// After the truncation ranges and re-replication reached a write quorum of every PG.
    Truncated,
}

type Conn = (NodeId, ShardId);

/// What a segment told the open, and what the open trusts of it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentReport {
    pub node: NodeId,
    pub view: SegmentView,
    /// Its SCL, clipped to the newest truncation range's start if it lacks that range.
    pub trusted_scl: Lsn,
}

/// One PG after open.
#[derive(Debug, Clone)]
pub struct PgState {
    /// The PG's membership: the newest epoch any answering segment holds (the placement
    /// default when none holds an override).
    pub members: MemberSets,
    pub segments: Vec<SegmentReport>,
    /// Highest trusted SCL among the segments that answered.
    pub pgcl: Lsn,
    /// The PG's last record at or below VDL (the next record's `prev_lsn_pg`). Exact after
    /// a write open; for a read-only open, the best bound known (`pgcl` capped at VDL when
    /// no record above `base` says more).
    pub tail: Lsn,
}

/// The outcome of an open.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub epoch: VolumeEpoch,
    pub vcl: Lsn,
    pub vdl: Lsn,
    /// Where the open started looking: the newest sealed range's start or the highest VDL a
    /// writer reported to an answering node, whichever is higher (0 if neither).
    pub base: Lsn,
    /// This open's range (write opens of a volume that existed).
    pub truncation: Option<Truncation>,
    /// The writer allocates LSNs above this.
    pub allocate_after: Lsn,
    pub pgs: BTreeMap<PgIndex, PgState>,
    pub records_fetched: u64,
    pub records_replicated: u64,
    pub attempts: u32,
    pub elapsed: Duration,
    /// Time per step of the last attempt.
    pub phases: Vec<(&'static str, Duration)>,
}

struct PhaseClock {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl PhaseClock {
    fn start() -> PhaseClock {
        PhaseClock {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }
}

impl Recovered {
    /// Segments of `pg` that hold every record of it up to `lsn` (≤ VDL), best first.
    pub fn sources(&self, pg: PgIndex, lsn: Lsn) -> Vec<NodeId> {
        let Some(state) = self.pgs.get(&pg) else {
            return Vec::new();
        };
        let need = lsn.min(state.tail);
        let mut s: Vec<&SegmentReport> = state
            .segments
            .iter()
            .filter(|r| r.trusted_scl >= need)
            .collect();
        s.sort_by_key(|r| std::cmp::Reverse(r.trusted_scl));
        s.iter().map(|r| r.node).collect()
    }
}

enum Failure {
    /// Out of reach for now (a quorum, a node): try again until `open_timeout`.
    Retry(String),
    /// Will not get better by waiting.
    Fatal(VolumeError),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Retry(s)
    }
}

pub(crate) struct Opener<'a> {
    cluster: &'a ClusterMap,
    cfg: &'a VolumeConfig,
    write: bool,
    stop_after: Option<RecoveryStep>,
    conns: HashMap<Conn, Rpc>,
    down: BTreeMap<Conn, String>,
    /// Highest epoch another open was seen to hold (from `StaleEpoch` replies).
    seen_epoch: VolumeEpoch,
    /// Per PG, the newest membership an answering segment holds (`list`); PGs not here
    /// have the placement default.
    memberships: BTreeMap<PgIndex, MemberSets>,
}

impl<'a> Opener<'a> {
    pub fn new(
        cluster: &'a ClusterMap,
        cfg: &'a VolumeConfig,
        write: bool,
        stop_after: Option<RecoveryStep>,
    ) -> Opener<'a> {
        Opener {
            cluster,
            cfg,
            write,
            stop_after,
            conns: HashMap::new(),
            down: BTreeMap::new(),
            seen_epoch: VolumeEpoch(0),
            memberships: BTreeMap::new(),
        }
    }

    /// The PG's membership as far as the open knows.
    pub(super) fn members(&self, pg: PgIndex) -> MemberSets {
        self.memberships.get(&pg).copied().unwrap_or_else(|| {
            MemberSets::stable(
                MembershipEpoch::PLACEMENT,
                self.cluster.pg_members(self.cfg.volume, pg),
            )
        })
    }

    /// Opens, retrying while quorums are out of reach, for at most `open_timeout`.
    pub async fn open(mut self) -> Result<Recovered, VolumeError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt().await {
                Ok(mut r) => {
                    r.attempts = attempts;
                    r.elapsed = started.elapsed();
                    return Ok(r);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    if started.elapsed() + RETRY_PAUSE > self.cfg.open_timeout {
                        return Err(VolumeError::OpenFailed {
                            waited_ms: started.elapsed().as_millis() as u64,
                            detail: why,
                        });
                    }
                    if let Some(progress) = &self.cfg.progress {
                        progress(&format!("volume open attempt {attempts}: {why}; retrying"));
                    }
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    fn addr(&self, (node, shard): Conn) -> SocketAddr {
        self.cluster
            .node(node)
            .expect("connections come from the cluster map")
            .shard_addr(shard)
    }

    fn shards(&self, node: NodeId) -> u16 {
        self.cluster
            .node(node)
            .and_then(|n| n.shards)
            .unwrap_or(self.cfg.default_shards)
    }

    fn conn_of(&self, node: NodeId, pg: PgIndex) -> Conn {
        (node, segment_shard(self.cfg.volume, pg, self.shards(node)))
    }

    /// Connects to every shard of every node not yet connected.
    async fn connect_all(&mut self) {
        let mut tasks = Vec::new();
        for n in self.cluster.nodes() {
            for s in 0..self.shards(NodeId(n.id)) {
                let conn = (NodeId(n.id), ShardId(s));
                if self.conns.contains_key(&conn) {
                    continue;
                }
                let (net, addr, ct, rt) = (
                    self.cfg.network.clone(),
                    self.addr(conn),
                    self.cfg.connect_timeout,
                    self.cfg.request_timeout,
                );
                tasks.push((
                    conn,
                    glommio::spawn_local(async move { Rpc::connect(&net, addr, ct, rt).await }),
                ));
            }
        }
        for (conn, task) in tasks {
            match task.await {
                Ok(rpc) => {
                    self.down.remove(&conn);
                    self.conns.insert(conn, rpc);
                }
                Err(e) => {
                    self.down.insert(conn, e);
                }
            }
        }
    }

    /// Sends each connection its requests (pipelined), all connections at once. A
    /// connection that fails is dropped and reported down; its requests get no reply.
    async fn exchange(
        &mut self,
        mut work: HashMap<Conn, Vec<Message>>,
    ) -> HashMap<Conn, Vec<Message>> {
        let mut tasks = Vec::new();
        for (conn, msgs) in work.drain() {
            if msgs.is_empty() {
                continue;
            }
            let Some(mut rpc) = self.conns.remove(&conn) else {
                continue;
            };
            tasks.push((
                conn,
                glommio::spawn_local(async move {
                    let r = rpc.call_all(msgs).await;
                    (rpc, r)
                }),
            ));
        }
        let mut out = HashMap::new();
        for (conn, task) in tasks {
            let (rpc, r) = task.await;
            match r {
                Ok(replies) => {
                    self.conns.insert(conn, rpc);
                    out.insert(conn, replies);
                }
                Err(e) => {
                    self.down.insert(conn, e);
                }
            }
        }
        out
    }

    fn unanswered(&self, pg: PgIndex, answered: &BTreeSet<NodeId>) -> String {
        let members = self.members(pg).nodes();
        let missing: Vec<String> = members
            .iter()
            .filter(|m| !answered.contains(m))
            .map(|m| {
                let why = self
                    .down
                    .get(&self.conn_of(*m, pg))
                    .map_or_else(|| "no usable reply".to_string(), Clone::clone);
                format!("node {m} ({why})")
            })
            .collect();
        missing.join(", ")
    }

    async fn attempt(&mut self) -> Result<Recovered, Failure> {
        let mut clock = PhaseClock::start();
        self.connect_all().await;
        let (mut pgs, max_epoch) = self.list().await?;
        clock.lap("connect+list");
        let epoch = VolumeEpoch(max_epoch.max(self.seen_epoch).0 + 1);
        let views = if self.write {
            pgs.insert(PgIndex(0));
            self.fence(&mut pgs, epoch).await?
        } else {
            self.look(&pgs).await?
        };
        clock.lap("fence");
        let mut state = compute(&views);
        self.fetch_tails(&mut state).await?;
        let records_fetched = state.fetched.len() as u64;
        let (vcl, vdl) = state.walk();
        clock.lap("index+walk");
        let mut recovered = Recovered {
            epoch: if self.write { epoch } else { max_epoch },
            vcl,
            vdl,
            base: state.base,
            truncation: None,
            allocate_after: vdl,
            pgs: BTreeMap::new(),
            records_fetched,
            records_replicated: 0,
            attempts: 0,
            elapsed: Duration::ZERO,
            phases: Vec::new(),
        };
        let any_record = views
            .values()
            .flatten()
            .any(|(_, v)| v.highest_lsn > Lsn::NONE);
        if self.write && (epoch > VolumeEpoch(1) || any_record) {
            let t = Truncation {
                epoch,
                start: vdl,
                end: Lsn(vdl.0.saturating_add(self.cfg.quorum.lal)),
                sealed: false,
            };
            let (tails, replicated) = self.truncate(&state, t).await?;
            state.tails = tails;
            recovered.records_replicated = replicated;
            clock.lap("truncate+re-replicate");
            if self.stop_after == Some(RecoveryStep::Truncated) {
                return Err(Failure::Fatal(VolumeError::Stopped {
                    step: RecoveryStep::Truncated,
                    vdl,
                }));
            }
            self.seal(&state, Truncation { sealed: true, ..t }).await?;
            recovered.truncation = Some(Truncation { sealed: true, ..t });
            recovered.allocate_after = t.end;
            clock.lap("seal");
        }
        recovered.phases = clock.laps;
        for (pg, reports) in &state.reports {
            let pgcl = state.pgcl[pg];
            recovered.pgs.insert(
                *pg,
                PgState {
                    members: self.members(*pg),
                    segments: reports.clone(),
                    pgcl,
                    tail: state.tails.get(pg).copied().unwrap_or(pgcl.min(vdl)),
                },
            );
        }
        Ok(recovered)
    }

    /// Fetches, for each PG, the index of its records in `(base, pgcl]` from the segment
    /// that has them.
    async fn fetch_tails(&mut self, state: &mut OpenState) -> Result<(), Failure> {
        let mut ranges: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>> = HashMap::new();
        for (pg, pgcl) in &state.pgcl {
            if *pgcl > state.base {
                let source = state.source[pg];
                ranges
                    .entry(self.conn_of(source, *pg))
                    .or_default()
                    .push((*pg, state.base, *pgcl));
            }
        }
        for (pg, entries) in self.fetch_index(ranges).await? {
            for e in entries {
                state.fetched.insert(e.lsn, (pg, e));
            }
        }
        Ok(())
    }

    /// Full records of each `(pg, after, to]` range (for re-replication).
    async fn fetch_ranges(
        &mut self,
        ranges: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>>,
    ) -> Result<Vec<(PgIndex, Vec<Record>)>, Failure> {
        let volume = self.cfg.volume;
        self.page_through(
            ranges,
            |pg, after, to| Message::FetchRecords {
                volume,
                pg,
                after_lsn: after,
                to_lsn: to,
                max_bytes: FETCH_BYTES,
            },
            |m| match m {
                Message::Records { more, records, .. } => Ok((more, records)),
                other => Err(Box::new(other)),
            },
            |r| r.lsn,
        )
        .await
    }

    /// Index entries (LSN, backlink, CPL) of each `(pg, after, to]` range: what the
    /// arithmetic of an open needs, served from the nodes' memory.
    async fn fetch_index(
        &mut self,
        ranges: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>>,
    ) -> Result<Vec<(PgIndex, Vec<IndexEntry>)>, Failure> {
        let volume = self.cfg.volume;
        self.page_through(
            ranges,
            |pg, after, to| Message::FetchIndex {
                volume,
                pg,
                after_lsn: after,
                to_lsn: to,
                max_entries: MAX_INDEX_ENTRIES as u32,
            },
            |m| match m {
                Message::Index { more, entries, .. } => Ok((more, entries)),
                other => Err(Box::new(other)),
            },
            |e| e.lsn,
        )
        .await
    }

    /// Asks for each `(pg, after, to]` range, following `more` until it is complete; all
    /// connections at once, each connection's ranges pipelined.
    async fn page_through<T>(
        &mut self,
        mut ranges: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>>,
        request: impl Fn(PgIndex, Lsn, Lsn) -> Message,
        take: impl Fn(Message) -> Result<(bool, Vec<T>), Box<Message>>,
        lsn_of: impl Fn(&T) -> Lsn,
    ) -> Result<Vec<(PgIndex, Vec<T>)>, Failure> {
        let mut out: BTreeMap<PgIndex, Vec<T>> = BTreeMap::new();
        while !ranges.is_empty() {
            let work = ranges
                .iter()
                .map(|(c, rs)| {
                    (
                        *c,
                        rs.iter().map(|(pg, a, t)| request(*pg, *a, *t)).collect(),
                    )
                })
                .collect();
            let mut replies = self.exchange(work).await;
            let mut next: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>> = HashMap::new();
            for (conn, rs) in ranges {
                let Some(answers) = replies.remove(&conn) else {
                    return Err(Failure::Retry(format!(
                        "fetching from node {} failed: {}",
                        conn.0,
                        self.down.get(&conn).map_or("no reply", String::as_str)
                    )));
                };
                for ((pg, _, to), answer) in rs.into_iter().zip(answers) {
                    let (more, items) = take(answer).map_err(|other| {
                        Failure::Retry(format!("fetching PG {pg} from node {}: {other:?}", conn.0))
                    })?;
                    let last = items.last().map(&lsn_of);
                    out.entry(pg).or_default().extend(items);
                    if let (true, Some(last)) = (more, last) {
                        next.entry(conn).or_default().push((pg, last, to));
                    }
                }
            }
            ranges = next;
        }
        Ok(out.into_iter().collect())
    }

    /// Writes the truncation range to every reachable member and brings each up to the
    /// PG's tail. Returns each PG's tail and the records sent.
    async fn truncate(
        &mut self,
        state: &OpenState,
        t: Truncation,
    ) -> Result<(HashMap<PgIndex, Lsn>, u64), Failure> {
        let volume = self.cfg.volume;
        let acks = self.send_truncation(state, t).await;
        // The tail: a complete segment's SCL once everything above VDL is annulled.
        let mut tails = HashMap::new();
        let mut behind: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>> = HashMap::new();
        for (pg, got) in &acks {
            // The source is complete up to the PG's tail; without its answer the tail
            // could be read short, and the next record would link to the wrong one.
            if let Some(source) = state.source.get(pg) {
                if !got.iter().any(|(n, _)| n == source) {
                    return Err(Failure::Retry(format!(
                        "PG {pg}: node {source}, the segment with its latest records, did not take the truncation range: {}",
                        self.down
                            .get(&self.conn_of(*source, *pg))
                            .map_or("no usable reply", String::as_str)
                    )));
                }
            }
            let tail = got.iter().map(|(_, scl)| *scl).max().unwrap_or(Lsn::NONE);
            if let Some(expected) = state.expected_tail(*pg) {
                if expected != tail {
                    return Err(Failure::Retry(format!(
                        "PG {pg}: after truncation the most complete segment ends at {tail}, but its records end at {expected} (a segment may have changed under the open)"
                    )));
                }
            }
            tails.insert(*pg, tail);
            // A node joining the PG (transitional membership) fills itself by gossip or a
            // rebuild: its SCL may lie below the source's floor, where no record is left
            // to send.
            let members = self.members(*pg);
            let joining =
                |n: &NodeId| members.new.is_some_and(|s| s.contains(n)) && !members.old.contains(n);
            for (node, scl) in got {
                if *scl < tail && !joining(node) {
                    behind
                        .entry(self.conn_of(*node, *pg))
                        .or_default()
                        .push((*pg, *scl, tail));
                }
            }
        }
        // Records the lagging members need, read once per PG from its most complete
        // segment: from the lowest lagging SCL up to the tail.
        let mut lowest: BTreeMap<PgIndex, Lsn> = BTreeMap::new();
        for (pg, from, _) in behind.values().flatten() {
            let low = lowest.entry(*pg).or_insert(*from);
            *low = (*low).min(*from);
        }
        let mut fetch: HashMap<Conn, Vec<(PgIndex, Lsn, Lsn)>> = HashMap::new();
        for (pg, from) in &lowest {
            fetch
                .entry(self.conn_of(state.source[pg], *pg))
                .or_default()
                .push((*pg, *from, tails[pg]));
        }
        let mut held: HashMap<PgIndex, BTreeMap<Lsn, Record>> = HashMap::new();
        for (pg, records) in self.fetch_ranges(fetch).await? {
            held.entry(pg)
                .or_default()
                .extend(records.into_iter().map(|r| (r.lsn, r)));
        }
        let mut sent = 0u64;
        let mut work: HashMap<Conn, Vec<Message>> = HashMap::new();
        for (conn, lags) in &behind {
            for (pg, from, tail) in lags {
                let records: Vec<Record> = held
                    .get(pg)
                    .into_iter()
                    .flat_map(|m| m.range(Lsn(from.0 + 1)..=*tail).map(|(_, r)| r.clone()))
                    .collect();
                sent += records.len() as u64;
                let membership = self.members(*pg).epoch;
                work.entry(*conn).or_default().extend(append_batches(
                    volume,
                    t.epoch,
                    records.into_iter().map(|r| (*pg, r)),
                    |_| membership,
                ));
            }
        }
        let mut complete: HashMap<PgIndex, BTreeSet<NodeId>> = acks
            .iter()
            .map(|(pg, got)| {
                let done = got.iter().filter(|(_, s)| *s >= tails[pg]).map(|(n, _)| *n);
                (*pg, done.collect())
            })
            .collect();
        for (conn, replies) in self.exchange(work).await {
            let mut last: HashMap<PgIndex, Lsn> = HashMap::new();
            for r in replies {
                if let Message::AppendAck { pg, scl, .. } = r {
                    last.insert(pg, scl);
                }
            }
            for (pg, scl) in last {
                if scl >= tails[&pg] {
                    complete.entry(pg).or_default().insert(conn.0);
                }
            }
        }
        for pg in state.reports.keys() {
            let done = complete.remove(pg).unwrap_or_default();
            let members = self.members(*pg);
            if !members.write_quorum(|n| done.contains(&n)) {
                let members = members.nodes();
                let short: Vec<String> = members
                    .iter()
                    .filter(|m| !done.contains(m))
                    .map(|m| {
                        let why = self
                            .down
                            .get(&self.conn_of(*m, *pg))
                            .map_or_else(|| "did not reach the tail".to_string(), Clone::clone);
                        format!("node {m} ({why})")
                    })
                    .collect();
                return Err(Failure::Retry(format!(
                    "PG {pg}: {} segments hold the truncation range and the tail {}, a write quorum is {WRITE_QUORUM}; short: {}",
                    done.len(),
                    tails[pg],
                    short.join(", ")
                )));
            }
        }
        Ok((tails, sent))
    }

    /// Sends `t` to every reachable member of every PG; returns `(node, scl)` per PG.
    async fn send_truncation(
        &mut self,
        state: &OpenState,
        t: Truncation,
    ) -> BTreeMap<PgIndex, Vec<(NodeId, Lsn)>> {
        let volume = self.cfg.volume;
        let mut work: HashMap<Conn, Vec<Message>> = HashMap::new();
        for pg in state.reports.keys() {
            for m in self.members(*pg).nodes() {
                work.entry(self.conn_of(m, *pg))
                    .or_default()
                    .push(Message::Truncate {
                        volume,
                        pg: *pg,
                        truncation: t,
                    });
            }
        }
        let mut acks: BTreeMap<PgIndex, Vec<(NodeId, Lsn)>> =
            state.reports.keys().map(|p| (*p, Vec::new())).collect();
        for (conn, replies) in self.exchange(work).await {
            for r in replies {
                match r {
                    Message::TruncateAck { pg, scl, .. } => {
                        acks.entry(pg).or_default().push((conn.0, scl));
                    }
                    other => {
                        self.down.insert(conn, format!("Truncate: {other:?}"));
                    }
                }
            }
        }
        acks
    }

    async fn seal(&mut self, state: &OpenState, t: Truncation) -> Result<(), Failure> {
        let acks = self.send_truncation(state, t).await;
        for (pg, got) in &acks {
            if !self
                .members(*pg)
                .write_quorum(|n| got.iter().any(|(m, _)| *m == n))
            {
                let answered = got.iter().map(|(n, _)| *n).collect();
                return Err(Failure::Retry(format!(
                    "PG {pg}: the sealed range reached {} segments, a write quorum is {WRITE_QUORUM}; no answer from {}",
                    got.len(),
                    self.unanswered(*pg, &answered)
                )));
            }
        }
        Ok(())
    }
}
