//! A shard's pages: `GetPage`, the coalescer that fills the page store, the floors that
//! let hot-log files go, and the back-pressure that waits for them.
//!
//! [`Shard::get_page`] answers a read once the segment proves it complete.
//!
//! [`Shard::build_page`] makes a page as of an LSN: the newest stored version at or below
//! it (or zeros), then every record above that version up to the LSN, from the hot log, in
//! LSN order. Each record is applied once: a record at or below the version's page LSN is
//! already in it.
//!
//! [`Shard::run_coalescer`] runs in a low-priority task queue and writes new page versions
//! up to `min(SCL, PGMRPL)` (FORMAT.md §4): each pass takes, per segment, the pages with the
//! most records waiting, builds them, writes each to the slot that does not hold its newest
//! version, syncs the segment's file, and only then counts them as stored. A pass that found
//! work is followed at once by the next (the task queue's share keeps foreground requests
//! ahead); an idle one sleeps [`IDLE_WAIT`].
//!
//! Every [`RELEASE_EVERY`] (more often when the log is nearly full) the shard moves each
//! segment's floor up to what its synced versions cover, drops those records, and releases
//! the hot-log files that hold none ([`Shard::advance_floors`]). While fewer than
//! [`PRESSURE_FREE_FILES`] files are free and coalescing can free some, appends wait
//! ([`Shard::wait_for_log_space`]).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use hexad_client::wire::{ErrorCode, Message, RebuildPhase};
use hexad_client::{Lsn, PageNo, VolumeId, PAGE_BYTES};

use crate::disk::Disk;
use crate::hotlog::format::SegmentKey;
use crate::pagestore::format::{self, Slot};
use crate::pagestore::{PageSlots, PageStore};
use crate::reply::{no_such_segment, Reply};
use crate::segment::Segment;
use crate::shard::{Shard, VolumeProgress};

/// Pages per segment per pass.
const PAGES_PER_PASS: usize = 64;
/// Pages built, and runs written, at once.
pub(crate) const PAGES_IN_FLIGHT: usize = 8;
/// Most slots in one page-store write (384 KiB).
const MAX_RUN_SLOTS: usize = 32;
/// While appends arrive and more than half the hot log is free, only pages with at least
/// this many records waiting are coalesced (a version per record would cost 12 KiB of
/// writes per record). When appends pause for [`IDLE_AFTER`], or the log is half full,
/// every page is, so that floors move and log files are released. Records are applied from
/// the hot log's block cache, so a long chain costs little more than a short one, while
/// each version costs a 12 KiB slot write: 32 records per version cost 0.84× the CPU per
/// commit of 8 (bench/RESULTS.md, issue #8).
const LAZY_CHAIN: usize = 32;
const IDLE_AFTER: Duration = Duration::from_millis(50);
/// Sleep between passes that found nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// How often coalesced records leave memory and their hot-log files are released, and
/// how often when the log is nearly full.
const RELEASE_EVERY: Duration = Duration::from_millis(100);
const RELEASE_EVERY_UNDER_PRESSURE: Duration = Duration::from_millis(5);
/// Sleep after a failed pass before trying again.
const ERROR_WAIT: Duration = Duration::from_secs(1);

/// Free hot-log files below which appends are slowed, and how long each waits.
const PRESSURE_FREE_FILES: u32 = 2;
const PRESSURE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);
/// Longest an append waits for space before it is tried anyway (and may fail `HotLogFull`).
const PRESSURE_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl<D: Disk + 'static> Shard<D> {
    /// Whether the hot log is nearly full (appends are being slowed).
    pub(crate) fn under_pressure(&self) -> bool {
        let threshold = PRESSURE_FREE_FILES.min(self.log().file_count().saturating_sub(1));
        self.pages.is_some() && self.log().files_free() < threshold
    }

    /// How far `seg` may coalesce: the writer's PGMRPL, or everything it holds once a
    /// membership change took this node out of the PG (it serves no reads any more, and
    /// no writer tells it a read point), so that its records leave the hot log.
    fn coalesce_limit(
        &self,
        progress: &HashMap<VolumeId, VolumeProgress>,
        key: &SegmentKey,
        seg: &Segment,
    ) -> Lsn {
        if seg.retired_from(self.id.node_id) {
            return Lsn(u64::MAX);
        }
        progress.get(&key.volume).map_or(Lsn::NONE, |p| p.pgmrpl)
    }

    /// Whether coalescing can free log space: some segment holds records below
    /// `min(SCL, PGMRPL)`. (Without the writer's `Progress` nothing can be coalesced, and
    /// waiting would only delay the `HotLogFull` answer.)
    fn can_free(&self) -> bool {
        let progress = self.progress.borrow();
        self.segments.borrow().iter().any(|(key, seg)| {
            let pgmrpl = self.coalesce_limit(&progress, key, seg);
            let pin = self.floor_pin(*key).unwrap_or(Lsn(u64::MAX));
            seg.scl().min(pgmrpl).min(pin) > seg.floor()
        })
    }

    /// Back-pressure: while the hot log is nearly full and the coalescer can free space,
    /// an append waits (bounded), so acks slow down instead of the log running out.
    pub(crate) async fn wait_for_log_space(&self) {
        if !self.under_pressure() {
            return;
        }
        self.backpressure_waits
            .set(self.backpressure_waits.get() + 1);
        let started = std::time::Instant::now();
        while self.under_pressure() && self.can_free() && started.elapsed() < PRESSURE_MAX_WAIT {
            glommio::timer::sleep(PRESSURE_WAIT).await;
        }
    }

    /// Moves each segment's floor up to what its synced page versions cover (durably,
    /// first), drops the records below it from memory, and releases the hot-log files no
    /// segment holds a record in any more.
    pub(crate) async fn advance_floors(&self) -> Result<(), String> {
        let moves: Vec<(SegmentKey, Lsn)> = {
            let progress = self.progress.borrow();
            self.segments
                .borrow()
                .iter()
                .filter(|(_, seg)| seg.rebuild != RebuildPhase::Copying)
                .filter_map(|(key, seg)| {
                    let pgmrpl = self.coalesce_limit(&progress, key, seg);
                    // A peer copying this segment's baseline needs the records above it.
                    let pin = self.floor_pin(*key).unwrap_or(Lsn(u64::MAX));
                    seg.floor_candidate(pgmrpl.min(pin)).map(|f| (*key, f))
                })
                .collect()
        };
        if !moves.is_empty() {
            let changes = moves
                .iter()
                .map(|(key, floor)| {
                    let mut m = self.meta_entry(*key);
                    m.floor = m.floor.max(*floor);
                    (*key, m)
                })
                .collect();
            self.persist_all(changes)
                .await
                .map_err(|r| format!("{:?}", r.message))?;
            let mut segs = self.segments.borrow_mut();
            for (key, floor) in moves {
                if let Some(seg) = segs.get_mut(&key) {
                    seg.advance_floor(floor);
                }
            }
        }
        let held: std::collections::HashSet<u32> = self
            .segments
            .borrow()
            .values()
            .flat_map(|s| s.live_by_file().keys().copied())
            .collect();
        self.log().release_unused(|file| !held.contains(&file));
        Ok(())
    }

    /// The page as of `read_lsn` (`GetPage`): its newest stored version at or below
    /// `read_lsn` and the records above it. Answers only when the segment proves it has
    /// every record of the page up to `read_lsn`: its SCL reaches `complete_lsn`, the PG's
    /// last record at or below the read point (the reader's word, or the writer's from
    /// `Progress`), or else the page's own backlink chain from `page_head` is complete here
    /// ([`crate::segment::Segment::page_chain_complete`]).
    pub(crate) async fn get_page(
        &self,
        key: SegmentKey,
        page: PageNo,
        read_lsn: Lsn,
        complete_lsn: Lsn,
        page_head: Lsn,
    ) -> Reply {
        let retired = self.segments.borrow().get(&key).and_then(|s| {
            s.retired_from(self.id.node_id)
                .then(|| s.membership_epoch())
        });
        if let Some(epoch) = retired {
            return Reply::error(
                ErrorCode::StaleMembership,
                u32::try_from(epoch.0).unwrap_or(u32::MAX),
                format!(
                    "volume {} pg {}: this node left the PG at membership epoch {epoch}; read from a member",
                    key.volume, key.pg
                ),
            );
        }
        let (pgmrpl, hint) =
            self.progress
                .borrow()
                .get(&key.volume)
                .map_or((Lsn::NONE, None), |p| {
                    let hint = (read_lsn <= p.vdl)
                        .then(|| p.complete.get(&key.pg).copied())
                        .flatten();
                    (p.pgmrpl, hint)
                });
        if read_lsn < pgmrpl {
            return Reply::error(
                ErrorCode::TooOld,
                0,
                format!(
                    "volume {}: read point {read_lsn} is below the min read point {pgmrpl}",
                    key.volume
                ),
            );
        }
        // The writer's word for the PG at its VDL also serves readers that do not know it.
        let need = hint
            .map_or(complete_lsn, |h| h.min(complete_lsn))
            .min(read_lsn);
        let scl_proves = {
            let segs = self.segments.borrow();
            let Some(seg) = segs.get(&key) else {
                return no_such_segment(key);
            };
            if seg.rebuild != RebuildPhase::None {
                return Reply::error(
                    ErrorCode::NotComplete,
                    0,
                    format!(
                        "volume {} pg {}: being rebuilt from a peer ({:?}); ask another segment",
                        key.volume, key.pg, seg.rebuild
                    ),
                );
            }
            seg.scl() >= need
        };
        if !scl_proves && page_head == Lsn::NONE {
            return self.not_complete(key, read_lsn, need);
        }
        let slots = match self.read_slots(key, page).await {
            Ok(slots) => slots,
            Err(e) => return Reply::error(ErrorCode::Io, 0, e.to_string()),
        };
        if let Some(slots) = &slots {
            if let Some(why) = slots.slots.iter().find_map(|s| match s {
                Slot::Corrupt(why) => Some(why.clone()),
                _ => None,
            }) {
                self.corrupt_page_versions
                    .set(self.corrupt_page_versions.get() + 1);
                if let Some(seg) = self.segments.borrow_mut().get_mut(&key) {
                    seg.corrupt_version(page);
                }
                eprintln!(
                    "hexad-node: CORRUPT page version: volume {} pg {} page {page}: {why}; refusing reads of it until it is rewritten",
                    key.volume, key.pg
                );
                return Reply::error(
                    ErrorCode::Corrupt,
                    0,
                    format!(
                        "volume {} pg {} page {page}: a stored version fails its check ({why}); ask another segment",
                        key.volume, key.pg
                    ),
                );
            }
        }
        if !scl_proves {
            let base = slots
                .as_ref()
                .and_then(|s| format::base_for(&s.slots, read_lsn))
                .map_or(Lsn::NONE, |(_, lsn)| lsn);
            let chain_proves = self
                .segments
                .borrow()
                .get(&key)
                .is_some_and(|seg| seg.page_chain_complete(page, page_head, read_lsn, base));
            if !chain_proves {
                return self.not_complete(key, read_lsn, need);
            }
            self.chain_reads.set(self.chain_reads.get() + 1);
        }
        if let Some(why) = self.version_gone(key, page, read_lsn, slots.as_ref()) {
            return Reply::error(ErrorCode::TooOld, 0, why);
        }
        let (page_lsn, data) = match self.build_page(key, page, read_lsn, slots.as_ref()).await {
            Ok((lsn, data, _)) => (lsn, data),
            Err((code, why)) => return Reply::error(code, 0, why),
        };
        Reply::ok(Message::Page {
            volume: key.volume,
            pg: key.pg,
            page,
            page_lsn,
            data: bytes::Bytes::copy_from_slice(&data),
        })
    }

    fn not_complete(&self, key: SegmentKey, read_lsn: Lsn, need: Lsn) -> Reply {
        let scl = self
            .segments
            .borrow()
            .get(&key)
            .map_or(Lsn::NONE, Segment::scl);
        Reply::error(
            ErrorCode::NotComplete,
            0,
            format!(
                "volume {} pg {}: complete up to LSN {scl} only; reading at {read_lsn} needs {need}, and the page's own chain does not prove it",
                key.volume, key.pg,
            ),
        )
    }

    /// Both slots of `page`, if this shard keeps a page store. A slot the coalescer is
    /// writing right now reads as empty if it is torn.
    pub(crate) async fn read_slots(
        &self,
        key: SegmentKey,
        page: PageNo,
    ) -> std::io::Result<Option<PageSlots>> {
        let Some(store) = &self.pages else {
            return Ok(None);
        };
        let mut slots = store.read(key, page).await?;
        if let Some(s) = self.writing.borrow().get(&(key, page)) {
            if matches!(slots.slots[*s], Slot::Corrupt(_)) {
                slots.slots[*s] = Slot::Empty;
            }
        }
        Ok(Some(slots))
    }

    /// Why `page` cannot be read at `read_lsn` any more, if so: the version below it is
    /// older than the floor while a newer version (above `read_lsn`) exists, so the
    /// records between that version and the floor may be only in the newer one, gone from
    /// the log. (Only the newest version is sure to hold every record up to the floor.) A
    /// reader never asks below the writer's PGMRPL, but a node that restarted does not know
    /// the PGMRPL until the writer's next `Progress`.
    fn version_gone(
        &self,
        key: SegmentKey,
        page: PageNo,
        read_lsn: Lsn,
        slots: Option<&PageSlots>,
    ) -> Option<String> {
        let slots = slots?;
        let base = format::base_for(&slots.slots, read_lsn).map_or(Lsn::NONE, |(_, l)| l);
        let newer = format::newest(&slots.slots).map(|(_, l)| l)?;
        let floor = self.segments.borrow().get(&key).map(Segment::floor)?;
        (base < floor && newer > read_lsn).then(|| {
            format!(
                "volume {} pg {} page {page}: reading at {read_lsn} would need the records from its version at {base} up to the floor {floor}, coalesced into its version at {newer} and gone from the log; read at or above {newer}",
                key.volume, key.pg
            )
        })
    }

    /// `page` as of `upto`: its page LSN, bytes, and how many records were applied on top
    /// of the stored version.
    pub(crate) async fn build_page(
        &self,
        key: SegmentKey,
        page: PageNo,
        upto: Lsn,
        slots: Option<&PageSlots>,
    ) -> Result<(Lsn, [u8; PAGE_BYTES], usize), (ErrorCode, String)> {
        let (mut page_lsn, mut data) = match slots
            .and_then(|s| format::base_for(&s.slots, upto).map(|(slot, lsn)| (lsn, s.data(slot))))
        {
            Some(base) => base,
            None => (Lsn::NONE, [0u8; PAGE_BYTES]),
        };
        let records: Vec<_> = {
            let segs = self.segments.borrow();
            let Some(seg) = segs.get(&key) else {
                return Err((
                    ErrorCode::NoSuchSegment,
                    format!("no segment for volume {} pg {}", key.volume, key.pg),
                ));
            };
            seg.page_records(page, page_lsn, upto)
        };
        let locs: Vec<_> = records.iter().map(|m| m.loc).collect();
        for (meta, read) in records.iter().zip(self.log().read_records(&locs).await) {
            match read {
                Ok(rec) if rec.lsn == meta.lsn && rec.page == page => {
                    rec.apply_to(&mut data);
                    page_lsn = rec.lsn;
                }
                Ok(rec) => {
                    return Err((
                        ErrorCode::Internal,
                        format!(
                        "index says LSN {} of page {page} at {:?}, the log holds LSN {} of page {}",
                        meta.lsn, meta.loc, rec.lsn, rec.page
                    ),
                    ))
                }
                Err(e) => return Err((ErrorCode::Io, e.to_string())),
            }
        }
        Ok((page_lsn, data, records.len()))
    }

    /// Whether `page` has a corrupt slot that may hold its newest version while records
    /// above the valid version may be gone from the log (below the floor): rebuilding it
    /// here could silently lose them, so it is marked lost until a peer's copy restores it
    /// (issue #6), and reads keep answering `Corrupt`.
    fn cannot_rebuild(
        &self,
        key: SegmentKey,
        page: PageNo,
        target: Lsn,
        slots: &PageSlots,
    ) -> bool {
        let base = format::base_for(&slots.slots, target).map_or(Lsn::NONE, |(_, l)| l);
        let newer_corrupt = slots.slots.iter().enumerate().any(|(s, slot)| {
            matches!(slot, Slot::Corrupt(_))
                && slots.claimed_lsn(key, page, s).is_none_or(|c| c > base)
        });
        let mut segs = self.segments.borrow_mut();
        let Some(seg) = segs.get_mut(&key) else {
            return true;
        };
        if !newer_corrupt || base >= seg.floor() {
            return false;
        }
        seg.page_lost(page);
        eprintln!(
            "hexad-node: page {page} of volume {} pg {}: its newest stored version is corrupt and the records since its older version (LSN {base}) are below the floor {}; it needs a copy from a peer (not built yet, issue #6) and reads of it answer Corrupt",
            key.volume,
            key.pg,
            seg.floor()
        );
        true
    }

    /// Coalesces forever (spawn it into a low-priority task queue).
    pub async fn run_coalescer(self: Rc<Self>) {
        let Some(store) = self.pages.clone() else {
            return;
        };
        let mut released = std::time::Instant::now();
        loop {
            let every = if self.under_pressure() {
                RELEASE_EVERY_UNDER_PRESSURE
            } else {
                RELEASE_EVERY
            };
            if released.elapsed() >= every {
                released = std::time::Instant::now();
                if let Err(e) = self.advance_floors().await {
                    eprintln!("hexad-node: cannot release hot-log space (retrying): {e}");
                }
            }
            match self.coalesce_pass(&store).await {
                // A pass that wrote a few versions paid a page-store sync for them: unless
                // the log needs room, let more pages reach their chain first.
                Ok(n) if n < PAGES_IN_FLIGHT && !self.under_pressure() => {
                    glommio::timer::sleep(IDLE_WAIT).await;
                }
                Ok(_) => glommio::yield_if_needed().await,
                Err(e) => {
                    eprintln!("hexad-node: coalescing failed (retrying in {ERROR_WAIT:?}): {e}");
                    glommio::timer::sleep(ERROR_WAIT).await;
                }
            }
        }
    }

    /// Syncs the segment's page file. After a failed sync the writes it should have made
    /// durable may never reach the media, even if a later sync succeeds (Linux drops the
    /// dirty state of what it failed to write), while reads still return them: nothing
    /// written since the last good sync can be trusted, so from then on every sync fails
    /// and no version counts as stored until the node restarts and rebuilds its pages from
    /// the log above its floor (as `PostgreSQL` panics on a failed `fsync`).
    pub(crate) async fn sync_pages(
        &self,
        store: &PageStore,
        key: SegmentKey,
    ) -> Result<(), String> {
        if let Some(why) = self.page_store_failed.borrow().as_ref() {
            return Err(format!(
                "the page store failed a sync earlier ({why}); no page version is stored until the node restarts"
            ));
        }
        store.sync(key).await.map_err(|e| {
            let why = format!(
                "volume {} pg {}: page-store sync failed: {e}",
                key.volume, key.pg
            );
            eprintln!("hexad-node: {why}; coalescing and rebuilds stop until the node restarts");
            *self.page_store_failed.borrow_mut() = Some(why.clone());
            why
        })
    }

    /// One pass over every segment; returns the page versions written. A segment's pages
    /// are built and written concurrently, then its file is synced once.
    pub(crate) async fn coalesce_pass(
        self: &Rc<Self>,
        store: &Rc<PageStore>,
    ) -> Result<usize, String> {
        if let Some(why) = self.page_store_failed.borrow().as_ref() {
            return Err(format!(
                "not coalescing: the page store failed a sync earlier ({why}); restart the node"
            ));
        }
        let log = self.log();
        let busy = self.clock.now() - self.last_append.get() < IDLE_AFTER;
        let min_chain = if busy && log.files_free() * 2 > log.file_count() {
            LAZY_CHAIN
        } else {
            1
        };
        let work: Vec<(SegmentKey, Lsn, Vec<PageNo>)> = {
            let progress = self.progress.borrow();
            let mut segs = self.segments.borrow_mut();
            segs.iter_mut()
                .filter(|(_, seg)| seg.rebuild != RebuildPhase::Copying)
                .filter_map(|(key, seg)| {
                    let pgmrpl = self.coalesce_limit(&progress, key, seg);
                    let target = seg.scl().min(pgmrpl);
                    let pages = seg.coalesce_work(target, PAGES_PER_PASS, min_chain);
                    (!pages.is_empty()).then_some((*key, target, pages))
                })
                .collect()
        };
        let mut written = 0;
        for (key, target, pages) in work {
            let mut built = Vec::new();
            let mut failed = None;
            for chunk in pages.chunks(PAGES_IN_FLIGHT) {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|page| {
                        let (shard, store, page) = (self.clone(), store.clone(), *page);
                        glommio::spawn_local(async move {
                            shard.build_version(&store, key, page, target).await
                        })
                    })
                    .collect();
                for t in tasks {
                    match t.await {
                        Ok(Some(b)) => built.push(b),
                        Ok(None) => {}
                        Err(e) => failed = Some(e),
                    }
                }
            }
            // A version read back that is not known durable (written by an earlier process,
            // perhaps only into the device's cache) is synced before it counts as stored.
            let unsynced = {
                let segs = self.segments.borrow();
                let seg = segs.get(&key);
                built
                    .iter()
                    .any(|b| b.write.is_none() && seg.is_some_and(|s| b.lsn > s.stored_lsn(b.page)))
            };
            let wrote = self.write_versions(store, key, &mut built).await?;
            if wrote > 0 || unsynced {
                self.sync_pages(store, key).await?;
            }
            if wrote > 0 {
                self.page_versions_written
                    .set(self.page_versions_written.get() + wrote as u64);
                let applied: usize = built.iter().map(|b| b.applied).sum();
                self.records_coalesced
                    .set(self.records_coalesced.get() + applied as u64);
            }
            if let Some(seg) = self.segments.borrow_mut().get_mut(&key) {
                for b in &built {
                    seg.stored(b.page, b.lsn);
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            written += wrote;
        }
        Ok(written)
    }

    /// Writes the new versions among `built`: sorted by offset, slots that sit back to back
    /// go out as one write (up to [`MAX_RUN_SLOTS`]), [`PAGES_IN_FLIGHT`] writes at a time.
    /// Returns how many versions were written (not yet synced).
    pub(crate) async fn write_versions(
        &self,
        store: &Rc<PageStore>,
        key: SegmentKey,
        built: &mut [Built],
    ) -> Result<usize, String> {
        let mut slots: Vec<(u64, PageNo, usize, Vec<u8>)> = built
            .iter_mut()
            .filter_map(|b| {
                let (s, bytes) = b.write.take()?;
                Some((format::slot_offset(key.pg, b.page, s), b.page, s, bytes))
            })
            .collect();
        slots.sort_by_key(|w| w.0);
        let count = slots.len();
        let mut runs: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        for (at, page, s, bytes) in slots {
            self.writing.borrow_mut().insert((key, page), s);
            match runs.last_mut() {
                Some((start, run))
                    if *start + (run.len() * format::SLOT_BYTES) as u64 == at
                        && run.len() < MAX_RUN_SLOTS =>
                {
                    run.push(bytes);
                }
                _ => runs.push((at, vec![bytes])),
            }
        }
        let mut result = Ok(count);
        let mut runs = runs.into_iter().peekable();
        while runs.peek().is_some() {
            let tasks: Vec<_> = runs
                .by_ref()
                .take(PAGES_IN_FLIGHT)
                .map(|(at, run)| {
                    let store = store.clone();
                    glommio::spawn_local(async move { store.write_run(key, at, &run).await })
                })
                .collect();
            self.page_writes
                .set(self.page_writes.get() + tasks.len() as u64);
            for t in tasks {
                if let Err(e) = t.await {
                    result = Err(e.to_string());
                }
            }
        }
        self.writing.borrow_mut().retain(|(k, _), _| *k != key);
        result
    }

    /// Builds `page` up to `target` as a new version if it has news (or a corrupt slot to
    /// heal), encoded for the slot that does not hold its newest version. `None`: nothing
    /// to do for now.
    async fn build_version(
        &self,
        store: &PageStore,
        key: SegmentKey,
        page: PageNo,
        target: Lsn,
    ) -> Result<Option<Built>, String> {
        let slots = store
            .read_cached(key, page)
            .await
            .map_err(|e| e.to_string())?;
        if self.cannot_rebuild(key, page, target, &slots) {
            return Ok(None);
        }
        let newest = format::newest(&slots.slots);
        let (lsn, data, applied) = self
            .build_page(key, page, target, Some(&slots))
            .await
            .map_err(|(_, why)| why)?;
        let healthy = slots.slots.iter().all(|s| !matches!(s, Slot::Corrupt(_)));
        if applied == 0 && healthy {
            // Already stored (e.g. seen again after a restart).
            return Ok(Some(Built {
                page,
                lsn,
                write: None,
                applied,
            }));
        }
        if newest.is_some_and(|(_, n)| n > lsn) {
            return Ok(None); // a newer version is stored than this target allows
        }
        let s = format::next_slot(&slots.slots);
        let bytes = format::encode(key.volume, key.pg, page, lsn, &data);
        Ok(Some(Built {
            page,
            lsn,
            write: Some((s, bytes)),
            applied,
        }))
    }
}

/// A page version the coalescer built (or a rebuild copied).
pub(crate) struct Built {
    pub(crate) page: PageNo,
    pub(crate) lsn: Lsn,
    /// The slot to write and its bytes; `None` when the store already holds it.
    pub(crate) write: Option<(usize, Vec<u8>)>,
    /// Records applied on top of the stored version.
    pub(crate) applied: usize,
}
