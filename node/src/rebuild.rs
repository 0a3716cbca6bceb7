//! Segment rebuild (DESIGN §8): a segment whose hot log no longer covers what it misses
//! (a peer answers `TooOld`: the records are below the peer's floor, in its page versions
//! only), or that a wiped node no longer has at all, copies a **page baseline** from a peer
//! and then pulls the records above it, like gossip.
//!
//! ```text
//!  rebuilder                                   peer
//!   GetBaseline(pin 0, extent 0)      ──▶   pins its floor F (30 s lease), reads the
//!                                            page file from extent 0 on (holes skipped),
//!   ◀── Baseline(F, epochs, ranges,          the newest valid version of each page,
//!                pages + CRC each)           CRC32C over page, LSN and bytes
//!   GetBaseline(pin F, next extents)  ──▶   (2 asked for before the chunk is written here)
//!   write each chunk's versions (runs, as the coalescer), fdatasync
//!   … until next extent = done
//!   persist floor F, epochs, ranges; drop own records ≤ F; SCL starts at F
//!   PullRecords(after F …)            ──▶   the records above F (the pin keeps them)
//!   GetBaseline(max_bytes 0)          ──▶   pin released
//! ```
//!
//! Every version with LSN v holds every record of its page up to v, and a pinned floor F
//! means every page's records up to F are in its stored versions, which only get newer.
//! So the copied versions hold every record ≤ F, and the records above F are still in the
//! peer's log to be pulled. A chunk whose page fails its CRC is asked for again (at most
//! [`CHUNK_TRIES`] times); nothing unchecked is written. Memory is one chunk being
//! written and [`CHUNKS_IN_FLIGHT`] being fetched ([`CHUNK_BYTES`] of pages each, three
//! times that of extents read on the peer, plus the local extents a chunk covers). With
//! `repair.rebuild_mb_per_s` the copy sleeps after each chunk while it is ahead of that
//! rate. While copying, the segment answers no reads and the
//! coalescer leaves it alone; until the pull reaches the peer's SCL it answers no reads
//! either (`SegmentStats` shows the phase and what was copied).
//!
//! A node started from a cluster file also looks for segments it should hold and does not
//! (a wiped or new node): every [`DISCOVER_EVERY`] it asks each peer shard for its
//! `SegmentStats` and creates, empty, each segment of a PG it is a member of; gossip then
//! fills it, by records or by rebuild.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hexad_client::volume::Pipelined;
use hexad_client::wire::{
    BaselinePage, ErrorCode, Message, RebuildPhase, SegmentStat, Truncation, BASELINE_DONE,
    MAX_BASELINE_PAGES,
};
use hexad_client::{Lsn, MembershipEpoch, PageNo, VolumeEpoch, PAGE_BYTES};

use crate::disk::Disk;
use crate::hotlog::format::SegmentKey;
use crate::meta::MAX_TRUNCATIONS;
use crate::pages::Built;
use crate::pagestore::format::{self, Slot, EXTENT_PAGES, SLOT_BYTES};
use crate::pagestore::PageStore;
use crate::reply::{below_floor, no_such_segment, Reply};
use crate::segment::Segment;
use crate::shard::Shard;

/// How long a peer keeps its floor for a rebuild that stopped asking.
pub const PIN_LEASE: Duration = Duration::from_secs(30);
/// A rebuild catching up renews its pin this often.
pub const PIN_RENEW: Duration = Duration::from_secs(5);
/// Page bytes asked for per baseline chunk.
const CHUNK_BYTES: u32 = 4 << 20;
/// Baseline requests out at once while a chunk is being written.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Tries per chunk before the rebuild gives up on the peer (a later round starts again).
const CHUNK_TRIES: u32 = 5;
/// How often a node looks for segments it should hold.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(5);

/// A floor held in place for a rebuilding peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloorPin {
    lsn: Lsn,
    until: Instant,
}

/// What a baseline copy brought.
pub(crate) struct Copied {
    pub(crate) floor: Lsn,
    volume_epoch: VolumeEpoch,
    truncations: Vec<Truncation>,
    pages: u64,
    elapsed: Duration,
}

impl<D: Disk + 'static> Shard<D> {
    /// The LSN `key`'s floor must not move past while a peer copies its baseline.
    pub(crate) fn floor_pin(&self, key: SegmentKey) -> Option<Lsn> {
        let mut pins = self.floor_pins.borrow_mut();
        match pins.get(&key) {
            Some(p) if p.until > self.clock.now() => Some(p.lsn),
            Some(_) => {
                pins.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Fault injection (tests): whether to corrupt this repair reply. With
    /// `HEXAD_FAULT_CORRUPT_REPAIR=FILE`, the shard does nothing until FILE exists, then
    /// corrupts as many repair replies (with records or pages) as the number in it says, by
    /// flipping the last byte of the body before framing: the frame's CRC is good and only
    /// the record's or page's own CRC can tell.
    pub(crate) fn take_fault(&self) -> bool {
        let armed = self
            .fault_arm_file
            .borrow()
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| text.trim().parse::<u32>().unwrap_or(0));
        if let Some(n) = armed {
            *self.fault_arm_file.borrow_mut() = None;
            self.fault_corrupt_repair.set(n);
            eprintln!(
                "hexad-node: FAULT INJECTION armed: the next {n} repair replies leave corrupted"
            );
        }
        let left = self.fault_corrupt_repair.get();
        self.fault_corrupt_repair.set(left.saturating_sub(1));
        left > 0
    }

    /// The serving side of `GetBaseline` (see the module comment).
    pub(crate) async fn serve_baseline(
        &self,
        key: SegmentKey,
        membership_epoch: MembershipEpoch,
        pin: Lsn,
        from_extent: u64,
        max_bytes: u32,
    ) -> Reply {
        if let Some(reply) = self.check_membership(key, membership_epoch) {
            return reply;
        }
        let Some(store) = self.pages.clone() else {
            return Reply::error(
                ErrorCode::Internal,
                0,
                "this node keeps no page store; rebuild from another".into(),
            );
        };
        let (floor, volume_epoch, truncations) = match self.segments.borrow().get(&key) {
            Some(seg) if seg.rebuild != RebuildPhase::None => {
                return Reply::error(
                    ErrorCode::NotComplete,
                    0,
                    format!(
                        "volume {} pg {}: being rebuilt itself; copy from another segment",
                        key.volume, key.pg
                    ),
                )
            }
            Some(seg) => (seg.floor(), seg.volume_epoch, seg.truncations().to_vec()),
            None => return no_such_segment(key),
        };
        let pin = if pin == Lsn::NONE { floor } else { pin };
        if max_bytes == 0 {
            self.floor_pins.borrow_mut().remove(&key);
        } else if floor > pin {
            return below_floor(key, pin, floor);
        } else {
            let until = self.clock.now() + PIN_LEASE;
            let held = self.floor_pin(key).unwrap_or(pin);
            let lsn = held.min(pin);
            self.floor_pins
                .borrow_mut()
                .insert(key, FloorPin { lsn, until });
        }
        let extents = baseline_extents(max_bytes);
        let (read, next) = if max_bytes == 0 || from_extent == BASELINE_DONE {
            (Vec::new(), None)
        } else {
            match store.read_extents(key, from_extent, extents).await {
                Ok(r) => r,
                Err(e) => return Reply::error(ErrorCode::Io, 0, e.to_string()),
            }
        };
        let mut pages = Vec::new();
        for (extent, bytes) in &read {
            for j in 0..EXTENT_PAGES {
                let page = PageNo(key.pg.first_page().0 + extent * EXTENT_PAGES + j);
                if !key.pg.contains(page) {
                    break;
                }
                match self.newest_in_extent(key, page, bytes, j) {
                    Ok(Some(p)) => pages.push(p),
                    Ok(None) => {}
                    Err(why) => return Reply::error(ErrorCode::Corrupt, 0, why),
                }
            }
        }
        let corrupt = !pages.is_empty() && self.take_fault();
        Reply {
            message: Message::Baseline {
                volume: key.volume,
                pg: key.pg,
                floor: pin,
                volume_epoch,
                next_extent: next.unwrap_or(BASELINE_DONE),
                truncations: if from_extent == 0 {
                    truncations
                } else {
                    Vec::new()
                },
                pages,
            },
            close: false,
            corrupt,
        }
    }

    /// The newest valid version of the `j`-th page of an extent read from the page file.
    /// A slot the coalescer is writing reads as empty if torn; any other corrupt slot that
    /// may hold a version newer than the valid one makes the page unusable from here.
    fn newest_in_extent(
        &self,
        key: SegmentKey,
        page: PageNo,
        extent: &[u8],
        j: u64,
    ) -> Result<Option<BaselinePage>, String> {
        let slot = |s| &extent[format::slot_in_extent(j, s)..][..SLOT_BYTES];
        let mut slots = [0, 1].map(|s| format::decode(key.volume, key.pg, page, slot(s)));
        if let Some(s) = self.writing.borrow().get(&(key, page)) {
            if matches!(slots[*s], Slot::Corrupt(_)) {
                slots[*s] = Slot::Empty;
            }
        }
        let newest = format::newest(&slots);
        for (s, state) in slots.iter().enumerate() {
            if let Slot::Corrupt(why) = state {
                let claimed = format::header_lsn(key.volume, key.pg, page, slot(s));
                if claimed.is_none_or(|c| newest.is_none_or(|(_, n)| c > n)) {
                    return Err(format!(
                        "volume {} pg {} page {page}: a stored version that may be its newest fails its check here ({why}); copy it from another segment",
                        key.volume, key.pg
                    ));
                }
            }
        }
        Ok(newest.map(|(s, lsn)| {
            BaselinePage::new(page, lsn, Bytes::copy_from_slice(format::data(slot(s))))
        }))
    }

    /// Every segment this shard holds, for `SegmentStats`.
    pub(crate) fn segment_stats(&self) -> Vec<SegmentStat> {
        let segs = self.segments.borrow();
        let mut out: Vec<SegmentStat> = segs
            .values()
            .map(|seg| SegmentStat {
                volume: seg.key.volume,
                pg: seg.key.pg,
                scl: seg.scl(),
                floor: seg.floor(),
                highest_lsn: seg.highest_lsn(),
                records: seg.record_count(),
                holes: seg.holes(),
                rebuild: seg.rebuild,
                volume_epoch: seg.volume_epoch,
                membership_epoch: seg.membership_epoch(),
                gossip_records: seg.gossip_records,
                gossip_bytes: seg.gossip_bytes,
                rebuild_pages: seg.rebuild_pages,
                rebuild_bytes: seg.rebuild_bytes,
            })
            .collect();
        out.sort_by_key(|s| (s.volume, s.pg));
        out
    }

    /// Copies `key`'s page baseline from `peer` and installs it (see the module comment).
    /// The segment is then `CatchingUp`: the caller pulls the records above the floor.
    pub(crate) async fn rebuild_from(
        &self,
        key: SegmentKey,
        peer: SocketAddr,
        conn: &Rc<Pipelined>,
    ) -> Result<Lsn, String> {
        let Some(store) = self.pages.clone() else {
            return Err("this node keeps no page store to rebuild into".into());
        };
        let epoch = {
            let mut segs = self.segments.borrow_mut();
            let seg = segs.entry(key).or_insert_with(|| Segment::new(key));
            seg.rebuild = RebuildPhase::Copying;
            seg.membership_epoch()
        };
        eprintln!(
            "hexad-node: rebuilding volume {} pg {} from {peer}: copying its page baseline",
            key.volume, key.pg
        );
        let copied = self.copy_baseline(&store, key, epoch, conn).await;
        let installed = match copied {
            Ok(c) => self.install_baseline(key, &c).await.map(|()| c),
            Err(e) => Err(e),
        };
        let mut segs = self.segments.borrow_mut();
        let seg = segs.get_mut(&key).expect("segments are never removed");
        match installed {
            Ok(c) => {
                seg.rebuild = RebuildPhase::CatchingUp;
                let mb = seg.rebuild_bytes as f64 / 1e6;
                eprintln!(
                    "hexad-node: volume {} pg {}: baseline at LSN {} stored: {} page versions, {mb:.1} MB in {:.2} s ({:.1} MB/s); pulling the records above it",
                    key.volume,
                    key.pg,
                    c.floor,
                    c.pages,
                    c.elapsed.as_secs_f64(),
                    mb / c.elapsed.as_secs_f64().max(1e-6)
                );
                Ok(c.floor)
            }
            Err(e) => {
                // What was written are whole, checked versions; the segment is as before.
                seg.rebuild = RebuildPhase::None;
                Err(e)
            }
        }
    }

    /// Streams the baseline into the page store: after the first chunk (which pins the
    /// peer's floor), [`CHUNKS_IN_FLIGHT`] requests are out while a chunk is written. A
    /// request names only where to start; a chunk ends after [`baseline_extents`] extents
    /// that hold data, so on a dense file the next chunk starts exactly one window later
    /// and the requests ahead are exact. Where holes make a chunk reach further, pages of
    /// extents an earlier chunk already covered are skipped, and the requests after it
    /// start from its end.
    async fn copy_baseline(
        &self,
        store: &Rc<PageStore>,
        key: SegmentKey,
        membership_epoch: MembershipEpoch,
        conn: &Rc<Pipelined>,
    ) -> Result<Copied, String> {
        let started = Instant::now();
        let ask = |pin: Lsn, from_extent: u64| {
            let conn = conn.clone();
            let task = glommio::spawn_local(async move {
                conn.call(Message::GetBaseline {
                    volume: key.volume,
                    pg: key.pg,
                    membership_epoch,
                    pin,
                    from_extent,
                    max_bytes: CHUNK_BYTES,
                })
                .await
            });
            (from_extent, task)
        };
        let window = baseline_extents(CHUNK_BYTES) as u64;
        let first_page = key.pg.first_page().0;
        let mut copied: Option<Copied> = None;
        let mut pending = VecDeque::from([ask(Lsn::NONE, 0)]);
        // Every extent below `covered` is done; `ahead` is where the next request starts.
        let (mut covered, mut ahead, mut tries) = (0u64, 0u64, 0u32);
        let mut copied_bytes = 0u64;
        while let Some((from, task)) = pending.pop_front() {
            let reply = task.await;
            let (floor, volume_epoch, next, truncations, pages) = match reply {
                Ok(Message::Baseline {
                    floor,
                    volume_epoch,
                    next_extent,
                    truncations,
                    pages,
                    ..
                }) => (floor, volume_epoch, next_extent, truncations, pages),
                Ok(Message::Error { code, message, .. }) => {
                    return Err(format!("baseline from extent {from}: {code:?}: {message}"))
                }
                Ok(other) => return Err(format!("baseline: unexpected {other:?}")),
                Err(e) => return Err(format!("baseline from extent {from}: {e}")),
            };
            if let Some(bad) = pages
                .iter()
                .find(|p| !p.intact() || !key.pg.contains(p.page))
            {
                self.repair_chunks_rejected
                    .set(self.repair_chunks_rejected.get() + 1);
                tries += 1;
                eprintln!(
                    "hexad-node: rebuild of volume {} pg {}: page {} of the chunk from extent {from} fails its CRC (try {tries} of {CHUNK_TRIES}); nothing of it is stored",
                    key.volume, key.pg, bad.page
                );
                if tries >= CHUNK_TRIES {
                    return Err(format!(
                        "the chunk from extent {from} failed its CRC {tries} times"
                    ));
                }
                let pin = copied.as_ref().map_or(Lsn::NONE, |c| c.floor);
                pending.push_front(ask(pin, from));
                continue;
            }
            tries = 0;
            let c = copied.get_or_insert(Copied {
                floor,
                volume_epoch,
                truncations,
                pages: 0,
                elapsed: Duration::ZERO,
            });
            let fresh: Vec<BaselinePage> = pages
                .into_iter()
                .filter(|p| (p.page.0 - first_page) / EXTENT_PAGES >= covered)
                .collect();
            covered = covered.max(next);
            if next == BASELINE_DONE {
                pending.clear();
            } else {
                ahead = ahead.max(covered);
                while pending.len() < CHUNKS_IN_FLIGHT {
                    pending.push_back(ask(c.floor, ahead));
                    ahead = ahead.saturating_add(window);
                }
            }
            c.pages += fresh.len() as u64;
            let bytes = (fresh.len() * PAGE_BYTES) as u64;
            self.store_baseline_chunk(store, key, fresh).await?;
            copied_bytes += bytes;
            self.pace(started, copied_bytes).await;
            if next == BASELINE_DONE {
                let mut c = copied.expect("set above");
                c.elapsed = started.elapsed();
                return Ok(c);
            }
        }
        unreachable!("the loop returns at the last chunk or on an error")
    }

    /// Sleeps while a rebuild that started at `started` and copied `bytes` runs ahead of
    /// the configured rate (`repair.rebuild_mb_per_s`).
    async fn pace(&self, started: Instant, bytes: u64) {
        let rate = self.rebuild_bytes_per_s.get();
        if rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
        if let Some(early) = due.checked_sub(started.elapsed()) {
            glommio::timer::sleep(early).await;
        }
    }

    /// Writes a chunk's versions (each to the slot without the local newest version, in
    /// runs), syncs, and counts them as stored. The local slots are read a whole extent at
    /// a time, and not at all where the page file has a hole (a wiped node's whole file).
    async fn store_baseline_chunk(
        &self,
        store: &Rc<PageStore>,
        key: SegmentKey,
        pages: Vec<BaselinePage>,
    ) -> Result<(), String> {
        let first = key.pg.first_page().0;
        let extent_of = |p: &BaselinePage| (p.page.0 - first) / EXTENT_PAGES;
        let mut local: HashMap<u64, Vec<u8>> = HashMap::new();
        if let (Some(lo), Some(hi)) = (
            pages.iter().map(extent_of).min(),
            pages.iter().map(extent_of).max(),
        ) {
            let span = usize::try_from(hi - lo + 1).expect("a chunk spans few extents");
            let (read, _) = store
                .read_extents(key, lo, span)
                .await
                .map_err(|e| e.to_string())?;
            local.extend(read.into_iter().filter(|(e, _)| *e <= hi));
        }
        let mut built = Vec::with_capacity(pages.len());
        for p in &pages {
            let j = (p.page.0 - first) % EXTENT_PAGES;
            let slots = match local.get(&extent_of(p)) {
                Some(bytes) => [0, 1].map(|s| {
                    let slot = &bytes[format::slot_in_extent(j, s)..][..SLOT_BYTES];
                    format::decode(key.volume, key.pg, p.page, slot)
                }),
                None => [Slot::Empty, Slot::Empty],
            };
            if format::newest(&slots).is_some_and(|(_, lsn)| lsn >= p.lsn) {
                continue; // already as new here
            }
            let data: &[u8; PAGE_BYTES] = p.data[..].try_into().expect("checked length");
            built.push(Built {
                page: p.page,
                lsn: p.lsn,
                write: Some((
                    format::next_slot(&slots),
                    format::encode(key.volume, key.pg, p.page, p.lsn, data),
                )),
                applied: 0,
            });
        }
        let wrote = self.write_versions(store, key, &mut built).await?;
        self.sync_pages(store, key).await?;
        let bytes = (pages.len() * PAGE_BYTES) as u64;
        self.rebuild_pages_copied
            .set(self.rebuild_pages_copied.get() + wrote as u64);
        self.rebuild_bytes_copied
            .set(self.rebuild_bytes_copied.get() + bytes);
        if let Some(seg) = self.segments.borrow_mut().get_mut(&key) {
            seg.rebuild_pages += pages.len() as u64;
            seg.rebuild_bytes += bytes;
            for p in &pages {
                seg.stored(p.page, p.lsn);
            }
        }
        Ok(())
    }

    /// Makes the baseline's floor, epoch and ranges durable, then takes them in memory.
    async fn install_baseline(&self, key: SegmentKey, c: &Copied) -> Result<(), String> {
        let mut meta = self.meta_entry(key);
        meta.floor = meta.floor.max(c.floor);
        meta.volume_epoch = meta.volume_epoch.max(c.volume_epoch);
        for t in &c.truncations {
            if meta.truncations.len() < MAX_TRUNCATIONS
                && !meta.truncations.iter().any(|h| h.epoch == t.epoch)
            {
                meta.truncations.push(*t);
            }
        }
        self.persist(key, meta)
            .await
            .map_err(|r| format!("{:?}", r.message))?;
        let mut segs = self.segments.borrow_mut();
        let seg = segs.entry(key).or_insert_with(|| Segment::new(key));
        seg.observe_epoch(c.volume_epoch);
        for t in &c.truncations {
            if let Err(e) = seg.add_truncation(*t) {
                eprintln!(
                    "hexad-node: volume {} pg {}: baseline range not taken: {e}",
                    key.volume, key.pg
                );
            }
        }
        seg.adopt_baseline(c.floor);
        Ok(())
    }

    /// Renews the peer's pin while the records above it are pulled (`keep`), or lets its
    /// floor move again (best effort: the lease ends it anyway).
    pub(crate) async fn keep_pin(&self, key: SegmentKey, conn: &Pipelined, pin: Lsn, keep: bool) {
        let epoch = self
            .segments
            .borrow()
            .get(&key)
            .map_or(MembershipEpoch(0), Segment::membership_epoch);
        let _ = conn
            .call(Message::GetBaseline {
                volume: key.volume,
                pg: key.pg,
                membership_epoch: epoch,
                pin,
                from_extent: BASELINE_DONE,
                max_bytes: u32::from(keep),
            })
            .await;
    }
}

/// Extents holding data that one `GetBaseline` of `max_bytes` reads (at least one, at most
/// what fits [`MAX_BASELINE_PAGES`]).
fn baseline_extents(max_bytes: u32) -> usize {
    (max_bytes as usize / (EXTENT_PAGES as usize * PAGE_BYTES))
        .clamp(1, MAX_BASELINE_PAGES / EXTENT_PAGES as usize)
}
