//! One shard under a stream of requests picked by a [`Choices`] — a seeded generator in the
//! simulation test (`shard/tests.rs`), the fuzzer's bytes in `fuzz/fuzz_targets/shard.rs` —
//! on the simulated disk, page store and metadata media, with power cuts (unsynced writes
//! lost or torn), failed metadata saves and coalescing passes in between. The requests are
//! a writer's: appends above the VDL it announced (with resends, gaps, and old and new
//! epochs), `Progress`, fences of every mode and truncations from volume opens, plus any
//! message the decoder accepts. After every step it checks what the shard promised:
//!
//! - no append is acknowledged at an epoch below one that an acknowledged `Fence` or
//!   `Truncate` raised the segment (or the volume) to, and `Fence Look` never reports an
//!   epoch below an acknowledged one;
//! - at every check (a step of its own, and around each power cut): every acknowledged
//!   record that no acknowledged truncation annulled is held with its exact bytes, or is at
//!   or below the segment's floor (coalesced into synced page versions); the segment's
//!   highest LSN is at least every such record's; and each page read at the SCL equals the
//!   reference page built from those records;
//! - nothing panics, whatever decoded message arrives.
//!
//! A decoded arbitrary message that changes state may break the writer's rules the checks
//! rely on (an LSN at or below the VDL, a truncation below it); after one, only the epoch
//! rule and "no panic" are checked.
//!
//! Requests mostly go one at a time; a burst step sends two to four at once (appends,
//! resends, fences, truncations, `Progress`) and judges the answers in the order the shard
//! finished them, sometimes cutting the power while they are in flight. Records the shard
//! holds from a burst without having acknowledged them (durable before the cut, or refused
//! after a fence overtook them) are in doubt, like any write whose answer was lost: they
//! are taken as acknowledged from then on. Not covered yet (issue #11): gossip, rebuild,
//! membership steps, several nodes and writers, and waits in simulated time (back-pressure
//! sleeps in real time); the whole-cluster simulator is still to be built.

mod check;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use hexad_client::membership::Membership;
use hexad_client::wire::{FenceMode, Message, Op, Record, Truncation};
use hexad_client::{Lsn, NodeId, PageNo, PgIndex, ShardId, VolumeEpoch, VolumeId};

use super::{Shard, ShardIdentity};
use crate::clock::SimClock;
use crate::disk::sim::{Rng, SimDisk};
use crate::hotlog::format::SegmentKey;
use crate::hotlog::HotLogConfig;
use crate::meta::{MemMedia, MetaStore};
use crate::pagestore::PageStore;

const CFG: HotLogConfig = HotLogConfig {
    max_block_bytes: 16 * 1024,
    max_writes_in_flight: 2,
    max_queue_bytes: 64 * 1024,
    cache_bytes: 32 * 1024,
};
/// Small hot-log files, so that sessions also fill and recycle them.
const FILES: u32 = 4;
const FILE_BYTES: u64 = 256 * 1024;
const VOLUME: VolumeId = VolumeId(7);
const PG: PgIndex = PgIndex(0);
const KEY: SegmentKey = SegmentKey {
    volume: VOLUME,
    pg: PG,
};
/// Pages the records touch (the first of the PG).
const PAGES: u64 = 16;
/// Requests per session at most.
pub const MAX_STEPS: usize = 400;
/// Trace lines kept for a failure report (`HEXAD_SHARD_SIM_TRACE` asks for more).
const TRACE_TAIL: usize = 40;

/// Where a session's decisions come from. `None`: no more input, the session ends.
pub trait Choices {
    /// A number below `n` (`n` ≥ 1).
    fn below(&mut self, n: u64) -> Option<u64>;
}

impl Choices for Rng {
    fn below(&mut self, n: u64) -> Option<u64> {
        Some(Rng::below(self, n))
    }
}

/// A fuzzer's input read as a stream of choices, one or two bytes each.
pub struct ByteChoices<'a>(pub &'a [u8]);

impl Choices for ByteChoices<'_> {
    fn below(&mut self, n: u64) -> Option<u64> {
        let width = if n <= 256 { 1 } else { 2 };
        let (head, rest) = self.0.split_at_checked(width)?;
        self.0 = rest;
        let v = head.iter().fold(0u64, |v, b| v << 8 | u64::from(*b));
        Some(v % n)
    }
}

/// What a session did, for the test's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub steps: usize,
    pub appends_acked: usize,
    pub power_cuts: usize,
    pub failed_saves: usize,
    pub versions_coalesced: usize,
    pub pages_checked: usize,
}

impl SessionStats {
    pub fn add(&mut self, o: &SessionStats) {
        self.steps += o.steps;
        self.appends_acked += o.appends_acked;
        self.power_cuts += o.power_cuts;
        self.failed_saves += o.failed_saves;
        self.versions_coalesced += o.versions_coalesced;
        self.pages_checked += o.pages_checked;
    }
}

/// The shard and what it promised so far.
struct Session {
    media: Rc<MemMedia>,
    clock: Rc<SimClock>,
    shard: Rc<Shard<SimDisk>>,
    writer: glommio::Task<()>,
    /// Acknowledged records not annulled since: LSN → (epoch, exact bytes).
    acked: BTreeMap<Lsn, (VolumeEpoch, Bytes)>,
    /// The highest epoch an acknowledged fence or truncation raised the segment to, and
    /// the volume to (`Fence Volume`).
    segment_epoch: VolumeEpoch,
    volume_epoch: VolumeEpoch,
    next_lsn: u64,
    last_lsn: u64,
    /// The VDL and PGMRPL the writer announced (`Progress`); new LSNs go above the VDL.
    vdl: Lsn,
    pgmrpl: Lsn,
    /// A decoded arbitrary message changed state: only the epoch rule is checked now.
    lawless: bool,
    trace: Vec<String>,
    stats: SessionStats,
}

/// What a step drew from its choices.
enum Drawn {
    Request(Message),
    /// No request this time (nothing acknowledged yet to resend).
    Nothing,
    /// The choices ran out: the session ends.
    End,
}

/// Runs one session; the error describes the first broken promise and the steps before it.
pub async fn run_session(choices: &mut dyn Choices) -> Result<SessionStats, String> {
    run_traced(choices).await.0
}

/// [`run_session`], also returning every step's trace line: the same choices give the same
/// trace.
pub async fn run_traced(choices: &mut dyn Choices) -> (Result<SessionStats, String>, Vec<String>) {
    let Some(seed) = choices.below(1 << 16) else {
        return (Ok(SessionStats::default()), Vec::new());
    };
    let media = Rc::new(MemMedia::default());
    let clock = Rc::new(SimClock::default());
    let disk = SimDisk::new(FILES, FILE_BYTES, seed);
    let pages = PageStore::simulated(seed);
    let (shard, writer) = match open(&media, &clock, disk, pages).await {
        Ok(opened) => opened,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut s = Session {
        media,
        clock,
        shard,
        writer,
        acked: BTreeMap::new(),
        segment_epoch: VolumeEpoch(0),
        volume_epoch: VolumeEpoch(0),
        next_lsn: 1,
        last_lsn: 0,
        vdl: Lsn::NONE,
        pgmrpl: Lsn::NONE,
        lawless: false,
        trace: Vec::new(),
        stats: SessionStats::default(),
    };
    let outcome = s.steps(choices).await;
    let outcome = match outcome {
        Ok(()) => s.power_cut().await,
        Err(e) => Err(e),
    };
    let Session {
        writer,
        trace,
        stats,
        ..
    } = s;
    drop(writer);
    let outcome = outcome.map(|()| stats).map_err(|e| {
        let tail = std::env::var("HEXAD_SHARD_SIM_TRACE")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(TRACE_TAIL);
        let from = trace.len().saturating_sub(tail);
        let mut out = format!("{e}\nthe last {} steps:\n", trace.len() - from);
        for line in &trace[from..] {
            let _ = writeln!(out, "  {line}");
        }
        out
    });
    (outcome, trace)
}

async fn open(
    media: &Rc<MemMedia>,
    clock: &Rc<SimClock>,
    disk: SimDisk,
    pages: PageStore,
) -> Result<(Rc<Shard<SimDisk>>, glommio::Task<()>), String> {
    let id = ShardIdentity {
        node_id: NodeId(1),
        shard: ShardId(0),
        shard_ports: vec![1],
    };
    let meta = MetaStore::open(media.clone()).map_err(|e| format!("metadata: {e}"))?;
    let (shard, _) = Shard::open(id, disk, CFG, meta, Some(pages), clock.clone())
        .await
        .map_err(|e| format!("the shard does not reopen: {e}"))?;
    let writer = glommio::spawn_local(shard.log().clone().run_writer());
    Ok((shard, writer))
}

impl Session {
    async fn steps(&mut self, c: &mut dyn Choices) -> Result<(), String> {
        while self.stats.steps < MAX_STEPS {
            let (Some(kind), Some(pause)) = (c.below(20), c.below(8)) else {
                return Ok(());
            };
            self.stats.steps += 1;
            // Mostly back to back, sometimes long enough for the coalescer to see appends
            // stopped or a lease to run out.
            self.clock.advance(Duration::from_micros(match pause {
                0..=4 => 100 * pause,
                5 | 6 => 20_000,
                _ => 5_000_000,
            }));
            let done = match kind {
                0..=5 | 7..=10 | 14 | 15 => match self.request(kind, c).await? {
                    Drawn::Request(msg) => self.send(msg).await.map(Some),
                    Drawn::Nothing => Ok(Some(())),
                    Drawn::End => Ok(None),
                },
                6 => self.burst(c).await,
                11 => Ok(self.fail_saves(c)),
                12 => self.power_cut().await.map(Some),
                13 => self.check("a check").await.map(Some),
                16 | 17 => self.coalesce().await.map(Some),
                _ => self.arbitrary(c).await,
            };
            if done?.is_none() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A request of step kind `kind` (see `steps`).
    async fn request(&mut self, kind: u64, c: &mut dyn Choices) -> Result<Drawn, String> {
        let drawn = match kind {
            0..=6 => self.append(c).await?,
            7 => return self.resend(c),
            8 | 9 => self.fence(c),
            10 => self.truncate(c),
            _ => self.progress(c),
        };
        Ok(drawn.map_or(Drawn::End, Drawn::Request))
    }

    /// Two to four requests at once, answered in whatever order the shard finishes them,
    /// and judged in that order; sometimes the power fails while they are in flight (what
    /// was acknowledged before must survive, what was not may or may not).
    async fn burst(&mut self, c: &mut dyn Choices) -> Result<Option<()>, String> {
        const KINDS: [u64; 6] = [0, 1, 7, 8, 10, 14];
        let (Some(count), Some(cut)) = (c.below(3), c.below(8)) else {
            return Ok(None);
        };
        let mut msgs = Vec::new();
        for _ in 0..count + 2 {
            let Some(kind) = c.below(KINDS.len() as u64) else {
                return Ok(None);
            };
            match self.request(KINDS[kind as usize], c).await? {
                Drawn::Request(msg) => msgs.push(msg),
                Drawn::Nothing => {}
                Drawn::End => return Ok(None),
            }
        }
        self.note(&format!("{} requests at once", msgs.len()));
        let mut sent: BTreeMap<Lsn, Vec<(VolumeEpoch, Bytes)>> = BTreeMap::new();
        for msg in &msgs {
            if let Message::AppendBatch {
                records,
                volume_epoch,
                ..
            } = msg
            {
                for r in records {
                    let sent = sent.entry(r.lsn).or_default();
                    sent.push((*volume_epoch, r.raw().clone()));
                }
            }
        }
        let answered: Rc<std::cell::RefCell<Vec<(Message, Message)>>> = Rc::default();
        let tasks: Vec<_> = msgs
            .into_iter()
            .map(|msg| {
                let (shard, answered) = (self.shard.clone(), answered.clone());
                glommio::spawn_local(async move {
                    let reply = shard.handle(msg.clone()).await.message;
                    answered.borrow_mut().push((msg, reply));
                })
            })
            .collect();
        let media_cut = cut < 2;
        let media = if media_cut {
            for _ in 0..=(cut * 3) {
                futures_lite::future::yield_now().await;
            }
            // No check before this cut: requests in flight may have changed what the
            // shard holds (a truncation) before their answers are judged.
            Some(self.crash_media())
        } else {
            None
        };
        for t in tasks {
            t.await;
        }
        for (msg, reply) in answered.take() {
            self.judge(&msg, &reply)?;
        }
        if let Some((disk, pages)) = media {
            self.note("power cut with requests in flight");
            self.reopen(disk, pages).await?;
        }
        self.adopt_in_doubt(&sent).await?;
        if media_cut {
            self.check("after a power cut").await?;
        }
        Ok(Some(()))
    }

    /// Takes as acknowledged the records of a burst the shard holds without having
    /// acknowledged them: in flight at a power cut yet durable, or refused (a fence came
    /// first) after they were written. Like any write whose answer was lost they may stay
    /// (recovery decides), and the checks then count them.
    async fn adopt_in_doubt(
        &mut self,
        sent: &BTreeMap<Lsn, Vec<(VolumeEpoch, Bytes)>>,
    ) -> Result<(), String> {
        let Some((_, floor, _)) = self.segment().filter(|_| !self.lawless && !sent.is_empty())
        else {
            return Ok(());
        };
        let held = self.fetch_above(floor, "after requests at once").await?;
        for (lsn, raw) in held {
            if self.acked.contains_key(&lsn) {
                continue;
            }
            let Some((epoch, _)) = sent
                .get(&lsn)
                .and_then(|s| s.iter().find(|(_, sent)| *sent == raw))
            else {
                continue;
            };
            self.note(&format!(
                "record {lsn} held without an acknowledgement: in doubt, kept"
            ));
            self.acked.insert(lsn, (*epoch, raw));
            self.last_lsn = self.last_lsn.max(lsn.0);
        }
        Ok(())
    }

    /// An epoch for a request: mostly the newest acknowledged one plus `ahead` (the current
    /// writer, or a new open), sometimes any small epoch (an old writer, a racing open).
    fn epoch(&self, c: &mut dyn Choices, ahead: u64) -> Option<u64> {
        let newest = self.segment_epoch.max(self.volume_epoch).0;
        Some(match c.below(8)? {
            0 | 1 => c.below(newest + 3)?,
            _ => newest + ahead,
        })
    }

    fn note(&mut self, line: &str) {
        self.trace.push(format!("{}: {line}", self.stats.steps));
    }

    async fn append(&mut self, c: &mut dyn Choices) -> Result<Option<Message>, String> {
        let (Some(epoch), Some(count)) = (self.epoch(c, 0), c.below(4)) else {
            return Ok(None);
        };
        let mut records = Vec::new();
        let mut last = self.last_lsn;
        for _ in 0..=count {
            let (Some(jump), Some(back), Some(page), Some(len)) =
                (c.below(16), c.below(16), c.below(16), c.below(48))
            else {
                return Ok(None);
            };
            // Mostly the next LSN after the last, sometimes one reused above the VDL (a
            // writer's LSNs at or below it are final) or a gap.
            let above = self.vdl.0;
            let lsn = match jump {
                0 if self.next_lsn > above + 1 => {
                    above + 1 + (self.next_lsn * 7 + back) % (self.next_lsn - above)
                }
                1 => self.next_lsn + 1 + back,
                _ => self.next_lsn.max(last + 1).max(above + 1),
            };
            let prev = if back == 0 {
                lsn - 1
            } else {
                last.min(lsn - 1)
            };
            let mut payload = vec![0u8; 4 + len as usize];
            payload[4..].fill(lsn as u8 ^ epoch as u8);
            records.push(Record::new(
                Lsn(lsn),
                Lsn(prev),
                Lsn(0),
                PageNo(page),
                Op::WriteBytes,
                back % 3 == 0,
                &payload,
            ));
            last = lsn;
            self.next_lsn = self.next_lsn.max(lsn + 1);
        }
        // A nearly full log holds appends until the coalescer frees a file, in real time:
        // coalesce first, as the node's own coalescer would meanwhile.
        if self.shard.under_pressure() {
            self.coalesce().await?;
        }
        Ok(Some(Message::AppendBatch {
            volume: VOLUME,
            pg: PG,
            volume_epoch: VolumeEpoch(epoch),
            membership_epoch: Membership::placement().epoch,
            records,
        }))
    }

    fn fence(&self, c: &mut dyn Choices) -> Option<Message> {
        let (mode, epoch) = (c.below(4)?, self.epoch(c, 1)?);
        let mode = [
            FenceMode::Look,
            FenceMode::Raise,
            FenceMode::Exclusive,
            FenceMode::Volume,
        ][mode as usize];
        Some(Message::Fence {
            volume: VOLUME,
            pg: PG,
            epoch: VolumeEpoch(epoch),
            mode,
        })
    }

    fn truncate(&self, c: &mut dyn Choices) -> Option<Message> {
        // A volume open truncates above the VDL it recovered, which is at least any VDL a
        // writer announced.
        let (epoch, start, len, sealed) = (
            self.epoch(c, 0)?,
            c.below(self.next_lsn + 1)?,
            c.below(self.next_lsn + 4)?,
            c.below(2)?,
        );
        let start = start.max(self.vdl.0);
        Some(Message::Truncate {
            volume: VOLUME,
            pg: PG,
            truncation: Truncation {
                epoch: VolumeEpoch(epoch),
                start: Lsn(start),
                end: Lsn(start + len),
                sealed: sealed == 1,
            },
        })
    }

    fn fail_saves(&mut self, c: &mut dyn Choices) -> Option<()> {
        let (saves, kind) = (c.below(3)?, c.below(4)?);
        self.stats.failed_saves += 1;
        if kind == 3 {
            self.shard.log().disk().fail_next_syncs(1 + saves as u32);
            self.note(&format!("the next {} hot-log syncs fail", 1 + saves));
            return Some(());
        }
        if kind == 2 {
            let store = self
                .shard
                .pages
                .as_ref()
                .expect("the simulated shard keeps pages");
            store.fail_next_syncs(1 + saves as u32);
            self.note(&format!("the next {} page-store syncs fail", 1 + saves));
            return Some(());
        }
        let kind = [std::io::ErrorKind::StorageFull, std::io::ErrorKind::Other][kind as usize];
        self.media.fail_next(1 + saves as u32, kind);
        self.note(&format!(
            "the next {} metadata saves fail ({kind:?})",
            1 + saves
        ));
        Some(())
    }

    /// Any message the decoder accepts, built from the input's bytes.
    async fn arbitrary(&mut self, c: &mut dyn Choices) -> Result<Option<()>, String> {
        let (Some(kind), Some(len)) = (c.below(64), c.below(96)) else {
            return Ok(None);
        };
        let mut body = Vec::with_capacity(len as usize);
        for _ in 0..len {
            let Some(b) = c.below(256) else {
                return Ok(None);
            };
            body.push(b as u8);
        }
        if let Ok(msg) = Message::decode(kind as u16, Bytes::from(body)) {
            if !read_only(&msg) && !self.lawless {
                self.lawless = true;
                self.note(
                    "a state-changing arbitrary message: only the epoch rule is checked from here",
                );
            }
            self.send(msg).await?;
        }
        Ok(Some(()))
    }

    /// Sends one request and checks its answer against the promises so far.
    async fn send(&mut self, msg: Message) -> Result<(), String> {
        let reply = self.shard.handle(msg.clone()).await.message;
        self.judge(&msg, &reply)
    }

    /// Checks an answer against the promises so far, and takes what it acknowledged.
    fn judge(&mut self, msg: &Message, reply: &Message) -> Result<(), String> {
        self.note(&format!("{} -> {}", describe(msg), describe(reply)));
        match (msg, reply) {
            (
                Message::AppendBatch {
                    volume,
                    pg,
                    volume_epoch,
                    records,
                    ..
                },
                Message::AppendAck { .. },
            ) if (*volume, *pg) == (VOLUME, PG) => {
                let floor = self.segment_epoch.max(self.volume_epoch);
                if *volume_epoch < floor {
                    return Err(format!(
                        "an append at epoch {volume_epoch} was acknowledged after epoch {floor} was"
                    ));
                }
                self.stats.appends_acked += 1;
                for r in records {
                    self.acked
                        .entry(r.lsn)
                        .or_insert((*volume_epoch, r.raw().clone()));
                    self.last_lsn = self.last_lsn.max(r.lsn.0);
                }
            }
            (Message::Fence { epoch, mode, .. }, Message::FenceOk { view, .. }) => match mode {
                FenceMode::Look if view.volume_epoch < self.segment_epoch => {
                    return Err(format!(
                        "Fence Look reports epoch {}, below the acknowledged {}",
                        view.volume_epoch, self.segment_epoch
                    ))
                }
                FenceMode::Look => {}
                FenceMode::Volume => self.volume_epoch = self.volume_epoch.max(*epoch),
                FenceMode::Raise | FenceMode::Exclusive => {
                    self.segment_epoch = self.segment_epoch.max(*epoch);
                }
            },
            (Message::Truncate { truncation: t, .. }, Message::TruncateAck { .. }) => {
                self.segment_epoch = self.segment_epoch.max(t.epoch);
                self.acked.retain(|lsn, (epoch, _)| !t.annuls(*epoch, *lsn));
            }
            _ => {}
        }
        Ok(())
    }

    /// Resends an acknowledged record, byte for byte, at the newest epoch.
    fn resend(&self, c: &mut dyn Choices) -> Result<Drawn, String> {
        let Some(pick) = c.below(self.acked.len().max(1) as u64) else {
            return Ok(Drawn::End);
        };
        let Some((_, (_, raw))) = self.acked.iter().nth(pick as usize) else {
            return Ok(Drawn::Nothing);
        };
        let mut r = hexad_client::wire::codec::Reader::new(raw.clone(), "record");
        let record = Record::decode(&mut r).map_err(|e| format!("an acked record: {e}"))?;
        let epoch = self.segment_epoch.max(self.volume_epoch);
        Ok(Drawn::Request(Message::AppendBatch {
            volume: VOLUME,
            pg: PG,
            volume_epoch: epoch,
            membership_epoch: Membership::placement().epoch,
            records: vec![record],
        }))
    }

    /// The writer's `Progress`: a VDL no higher than the segment's SCL (all it holds up to
    /// there was acknowledged, as a quorum would have), a PGMRPL at or below it.
    fn progress(&mut self, c: &mut dyn Choices) -> Option<Message> {
        let scl = self.segment().map_or(Lsn::NONE, |(scl, _, _)| scl);
        let (v, m) = (c.below(4)?, c.below(4)?);
        if scl > self.vdl {
            self.vdl = Lsn(self.vdl.0 + (scl.0 - self.vdl.0) * (v + 1) / 4);
        }
        if self.vdl > self.pgmrpl {
            self.pgmrpl = Lsn(self.pgmrpl.0 + (self.vdl.0 - self.pgmrpl.0) * m / 3);
        }
        let complete = self
            .acked
            .range(..=self.vdl)
            .next_back()
            .map_or(Lsn::NONE, |(l, _)| *l);
        Some(Message::Progress {
            volume: VOLUME,
            vdl: self.vdl,
            pgmrpl: self.pgmrpl,
            pgs: vec![(PG, complete)],
        })
    }

    /// One coalescing pass, then the floors move and hot-log files are released.
    async fn coalesce(&mut self) -> Result<(), String> {
        let store = self
            .shard
            .pages
            .clone()
            .expect("the simulated shard keeps pages");
        let written = self.shard.coalesce_pass(&store).await;
        let floors = self.shard.advance_floors().await;
        let (_, floor, _) = self.segment().unwrap_or_default();
        self.note(&format!(
            "coalesce: {written:?} versions, floors {floors:?}, floor now {floor}"
        ));
        if let Ok(n) = written {
            self.stats.versions_coalesced += n;
        }
        Ok(())
    }

    /// The segment's SCL, floor and highest LSN, if it exists.
    fn segment(&self) -> Option<(Lsn, Lsn, Lsn)> {
        self.shard
            .segments
            .borrow()
            .get(&KEY)
            .map(|s| (s.scl(), s.floor(), s.highest_lsn()))
    }

    /// Cuts the power: unsynced writes to the hot log and the page store are lost or torn;
    /// the shard reopens from what they and the metadata media hold.
    async fn power_cut(&mut self) -> Result<(), String> {
        self.check_records("before a power cut").await?;
        let (disk, pages) = self.crash_media();
        self.reopen(disk, pages).await?;
        self.check("after a power cut").await
    }

    /// The disk and page store as they come back from a power cut; the old ones take no
    /// more I/O.
    fn crash_media(&self) -> (SimDisk, PageStore) {
        let disk = self.shard.log().disk().crash();
        let pages = self
            .shard
            .pages
            .as_ref()
            .expect("the simulated shard keeps pages")
            .crash();
        (disk, pages)
    }

    async fn reopen(&mut self, disk: SimDisk, pages: PageStore) -> Result<(), String> {
        let (shard, writer) = open(&self.media, &self.clock, disk, pages).await?;
        self.shard = shard;
        drop(std::mem::replace(&mut self.writer, writer));
        self.stats.power_cuts += 1;
        self.note("power cut; reopened");
        Ok(())
    }
}

/// The page a record's bytes name.
fn page_of(raw: &Bytes) -> Option<PageNo> {
    let mut r = hexad_client::wire::codec::Reader::new(raw.clone(), "record");
    Record::decode(&mut r).ok().map(|r| r.page)
}

/// Whether a request leaves the shard's state as it was.
fn read_only(m: &Message) -> bool {
    matches!(
        m,
        Message::GetSegmentState { .. }
            | Message::FetchRecords { .. }
            | Message::GetStats
            | Message::ListSegments { .. }
            | Message::FetchIndex { .. }
            | Message::GetPage { .. }
            | Message::Fence {
                mode: FenceMode::Look,
                ..
            }
    )
}

/// One line for the trace.
fn describe(m: &Message) -> String {
    match m {
        Message::AppendBatch {
            volume_epoch,
            records,
            ..
        } => format!(
            "AppendBatch epoch {volume_epoch} lsns {:?}",
            records.iter().map(|r| r.lsn.0).collect::<Vec<_>>()
        ),
        Message::AppendAck {
            durable_lsn, scl, ..
        } => {
            format!("AppendAck durable {durable_lsn} scl {scl}")
        }
        Message::Fence { epoch, mode, .. } => format!("Fence {mode:?} {epoch}"),
        Message::FenceOk { view, .. } => {
            format!("FenceOk epoch {} scl {}", view.volume_epoch, view.scl)
        }
        Message::Truncate { truncation: t, .. } => format!(
            "Truncate epoch {} ({}, {}] sealed {}",
            t.epoch, t.start, t.end, t.sealed
        ),
        Message::Error { code, message, .. } => format!("Error {code:?}: {message}"),
        Message::Records { records, .. } => format!("Records ({})", records.len()),
        other => {
            let mut s = format!("{other:?}");
            s.truncate(120);
            s
        }
    }
}
