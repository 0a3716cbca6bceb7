//! One segment's in-memory state: which records it holds, where they are, its SCL and
//! epochs. Rebuilt from the hot log at restart.

mod index;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hexad_client::membership::{Members, Membership};
use hexad_client::wire::{PageLink, RebuildPhase, Truncation};
use hexad_client::{Lsn, MembershipEpoch, NodeId, PageNo, VolumeEpoch};

use crate::hotlog::format::{RecordLoc, SegmentKey};
use index::{ByPage, Records};

#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    pub lsn: Lsn,
    pub prev_lsn_pg: Lsn,
    pub page_link: PageLink,
    /// Volume epoch of the writer (or volume open) that sent it.
    pub epoch: VolumeEpoch,
    /// It ends a mini-transaction (volume opens look for these without reading the log).
    pub cpl: bool,
    pub page: PageNo,
    pub loc: RecordLoc,
}

/// Records received for one PG replica.
///
/// SCL (segment complete LSN) is the highest LSN up to which the segment holds every
/// record of its PG: the end of the `prev_lsn_pg` chain starting at the PG's first record
/// (whose backlink is 0). Records above a hole wait in `successors` until it is filled.
///
/// Truncation ranges (DESIGN §7) annul records of older epochs inside them: such records
/// are dropped when the range arrives and refused when they arrive (or are replayed from
/// the hot log) later.
#[derive(Debug)]
pub struct Segment {
    pub key: SegmentKey,
    records: Records,
    /// The records of each page, for reads of one page.
    by_page: ByPage,
    /// `prev_lsn_pg -> lsn` for received records above the SCL.
    successors: HashMap<Lsn, Lsn>,
    scl: Lsn,
    pub volume_epoch: VolumeEpoch,
    /// Who holds the PG, as this segment last learned it (`SetMembership`, or a peer's
    /// newer word through gossip); the placement default until then. Persisted in
    /// `segments.meta`.
    pub membership: Membership,
    /// Highest epoch among the records held.
    max_record_epoch: VolumeEpoch,
    truncations: Vec<Truncation>,
    /// Pages that may hold records newer than their stored version (the coalescer's work).
    dirty: BTreeSet<PageNo>,
    /// The newest stored (synced) version's page LSN, for pages the coalescer has seen.
    stored: HashMap<PageNo, Lsn>,
    /// Pages with a corrupt stored version, to be rewritten.
    heal: BTreeSet<PageNo>,
    /// Pages whose newest version is corrupt and whose older records are gone from the log:
    /// only a peer's copy can restore them (issue #6); reads answer `Corrupt` meanwhile.
    lost: BTreeSet<PageNo>,
    /// Records at or below this LSN are in synced page versions and were dropped from
    /// memory (and may be gone from the hot log); the SCL never falls below it.
    floor: Lsn,
    /// Records held, per hot-log file (a file is reusable when no segment holds any).
    /// (A handful of entries, one looked up per record: a small ordered map, no hashing.)
    live_by_file: BTreeMap<u32, u64>,
    /// Where a rebuild stands; reads are refused unless `None`.
    pub rebuild: RebuildPhase,
    /// What gossip and rebuilds brought in since the node started (`SegmentStats`).
    pub gossip_records: u64,
    pub gossip_bytes: u64,
    pub rebuild_pages: u64,
    pub rebuild_bytes: u64,
}

impl Segment {
    pub fn new(key: SegmentKey) -> Segment {
        Segment {
            key,
            records: Records::default(),
            by_page: ByPage::default(),
            successors: HashMap::new(),
            scl: Lsn::NONE,
            volume_epoch: VolumeEpoch(0),
            membership: Membership::placement(),
            max_record_epoch: VolumeEpoch(0),
            truncations: Vec::new(),
            dirty: BTreeSet::new(),
            stored: HashMap::new(),
            heal: BTreeSet::new(),
            lost: BTreeSet::new(),
            floor: Lsn::NONE,
            live_by_file: BTreeMap::new(),
            rebuild: RebuildPhase::None,
            gossip_records: 0,
            gossip_bytes: 0,
            rebuild_pages: 0,
            rebuild_bytes: 0,
        }
    }

    /// Adds a durable record. A duplicate LSN (a resend) keeps the first copy; a record
    /// annulled by a truncation range is dropped. Returns whether it was added.
    pub fn insert(&mut self, m: RecordMeta) -> bool {
        assert!(
            m.lsn > Lsn::NONE && m.prev_lsn_pg < m.lsn,
            "record invariants are checked at decode"
        );
        if m.lsn <= self.floor || self.annulled(m.epoch, m.lsn) || !self.records.insert(m) {
            return false;
        }
        *self.live_by_file.entry(m.loc.file).or_default() += 1;
        self.by_page.insert(m.page, m.lsn);
        self.dirty.insert(m.page);
        self.max_record_epoch = self.max_record_epoch.max(m.epoch);
        if m.prev_lsn_pg == self.scl {
            // The usual case, records in order: the chain grows by one without the map (an
            // entry for the same backlink, left by a record since annulled, goes).
            if !self.successors.is_empty() {
                self.successors.remove(&m.prev_lsn_pg);
            }
            self.scl = m.lsn;
            self.advance_scl();
        } else if m.lsn > self.scl {
            self.successors.insert(m.prev_lsn_pg, m.lsn);
            self.advance_scl();
        }
        true
    }

    /// Whether the record at `lsn` is held (in memory, above the floor).
    pub fn holds(&self, lsn: Lsn) -> bool {
        self.records.contains(lsn)
    }

    /// The records of `page` with `after` < LSN ≤ `upto`, in LSN order.
    pub fn page_records(&self, page: PageNo, after: Lsn, upto: Lsn) -> Vec<RecordMeta> {
        if after >= upto {
            return Vec::new();
        }
        self.by_page
            .range(page, after, upto)
            .map(|lsn| *self.records.get(lsn).expect("a page's records are held"))
            .collect()
    }

    /// Whether the page's own backlink chain proves this segment holds every record of
    /// `page` up to `read_lsn`, given `head`, the page's last record at or below `read_lsn`
    /// (the reader's word), and `base`, the page LSN of the stored version a read starts
    /// from. It does when, walking back from `head` through records held here, the chain
    /// reaches `base` or below (an exact link to 0 is the page's first record; a link
    /// that is only a bound proves nothing unless it is at or below `base`), and no record
    /// of the page above `head` is held (that would make the reader's word stale).
    pub fn page_chain_complete(&self, page: PageNo, head: Lsn, read_lsn: Lsn, base: Lsn) -> bool {
        if head > read_lsn {
            return false;
        }
        if head < read_lsn && self.by_page.count(page, head, read_lsn) > 0 {
            return false;
        }
        let mut at = head;
        while at > base {
            let Some(m) = self.records.get(at).filter(|m| m.page == page) else {
                return false;
            };
            match m.page_link {
                PageLink::Exact(prev) => at = prev,
                PageLink::AtMost(bound) if bound <= base => return true,
                PageLink::AtMost(_) => return false,
            }
        }
        true
    }

    /// Up to `max` pages with at least `min_chain` records in `(stored version, target]`
    /// (or a version to heal), those with the most such records first; pages with nothing
    /// above their stored version leave the work list.
    pub fn coalesce_work(&mut self, target: Lsn, max: usize, min_chain: usize) -> Vec<PageNo> {
        let mut work = Vec::new();
        let mut clean = Vec::new();
        for page in self.dirty.iter().filter(|p| !self.lost.contains(p)) {
            let stored = self.stored_lsn(*page);
            let newer = |to: Lsn| {
                if to <= stored {
                    return 0;
                }
                self.by_page.count(*page, stored, to)
            };
            let ready = if stored < target { newer(target) } else { 0 };
            if ready >= min_chain.max(1) || self.heal.contains(page) {
                work.push((ready, *page));
            } else if ready == 0 && newer(Lsn(u64::MAX)) == 0 {
                clean.push(*page);
            }
        }
        for page in clean {
            self.dirty.remove(&page);
        }
        work.sort_by_key(|w| std::cmp::Reverse(w.0));
        work.into_iter().take(max).map(|(_, p)| p).collect()
    }

    /// The LSN of `page`'s newest version known durable in the page store.
    pub fn stored_lsn(&self, page: PageNo) -> Lsn {
        self.stored.get(&page).copied().unwrap_or(Lsn::NONE)
    }

    /// A version of `page` at `lsn` is durable in the page store.
    pub fn stored(&mut self, page: PageNo, lsn: Lsn) {
        let held = self.stored.entry(page).or_default();
        *held = (*held).max(lsn);
        self.heal.remove(&page);
    }

    /// A stored version of `page` failed its CRC: rewrite it.
    pub fn corrupt_version(&mut self, page: PageNo) {
        if !self.lost.contains(&page) {
            self.heal.insert(page);
            self.dirty.insert(page);
        }
    }

    /// `page` cannot be rebuilt here (see `lost`): stop trying, and let the floor move on.
    pub fn page_lost(&mut self, page: PageNo) {
        self.heal.remove(&page);
        self.dirty.remove(&page);
        self.lost.insert(page);
    }

    /// Pages that may hold records not yet in the page store.
    pub fn pages_pending(&self) -> usize {
        self.dirty.len()
    }

    /// Removes a held record from memory.
    fn forget(&mut self, lsn: Lsn) {
        if let Some(m) = self.records.remove(lsn) {
            self.forgotten(&m);
        }
    }

    /// Removes every held record at or below `upto` from memory, oldest first.
    fn forget_through(&mut self, upto: Lsn) {
        while let Some(m) = self.records.pop_front_through(upto) {
            self.forgotten(&m);
        }
    }

    fn forgotten(&mut self, m: &RecordMeta) {
        self.by_page.remove(m.page, m.lsn);
        if let Some(n) = self.live_by_file.get_mut(&m.loc.file) {
            *n -= 1;
            if *n == 0 {
                self.live_by_file.remove(&m.loc.file);
            }
        }
    }

    /// The floor a restart starts from (from the metadata file), before the log replays.
    pub fn restore_floor(&mut self, floor: Lsn) {
        self.floor = floor;
        self.scl = self.scl.max(floor);
    }

    pub fn floor(&self) -> Lsn {
        self.floor
    }

    /// The floor the segment could move to now: the last record at or below `target` that
    /// is below every page's oldest record not yet in its stored (synced) version, if it is
    /// above the current floor and no version waits to be healed. Every record at or below
    /// it is then in its page's stored version. (While appends arrive most pages hold a few
    /// records above their version, so waiting for every page to be stored up to `target`
    /// would keep the floor still, and every record in memory, until the log fills.)
    pub fn floor_candidate(&self, target: Lsn) -> Option<Lsn> {
        if !self.heal.is_empty() {
            return None;
        }
        let mut bound = target.min(self.scl);
        // A lost page does not hold the floor back: its copy from a peer must then be at
        // least as new as the floor.
        for page in self.dirty.iter().filter(|p| !self.lost.contains(p)) {
            let stored = self.stored_lsn(*page);
            if let Some(first) = self.by_page.range(*page, stored, bound).next() {
                bound = Lsn(first.0 - 1);
            }
        }
        let last = self.records.range(..=bound).next_back().map(|m| m.lsn)?;
        (last > self.floor).then_some(last)
    }

    /// Drops every record at or below `floor` (durably recorded as the segment's floor,
    /// with their pages' versions synced).
    pub fn advance_floor(&mut self, floor: Lsn) {
        assert!(floor <= self.scl, "floor {floor} above SCL {}", self.scl);
        self.forget_through(floor);
        self.floor = self.floor.max(floor);
    }

    /// Takes a page baseline copied from a peer (a segment rebuild): every record at or
    /// below `floor` is now in synced page versions, as if coalesced here. Drops the records
    /// held below it and starts the SCL there at least.
    pub fn adopt_baseline(&mut self, floor: Lsn) {
        self.forget_through(floor);
        self.floor = self.floor.max(floor);
        if self.scl < self.floor {
            self.scl = self.floor;
            self.successors.retain(|_, lsn| *lsn > floor);
            self.advance_scl();
        }
    }

    /// The gaps in the PG's backlink chain above the SCL, up to `upto`, as ranges
    /// `(after, to]` that hold no record here: below each held record whose predecessor is
    /// missing, from the nearest held record (or the SCL) up to that predecessor, and above
    /// the highest held record up to `upto`. Backlinks are exact within a PG, so these are
    /// exactly the records to pull.
    pub fn missing_ranges(&self, upto: Lsn) -> Vec<(Lsn, Lsn)> {
        let mut ranges = Vec::new();
        for m in self.records.range(Lsn(self.scl.0 + 1)..) {
            if m.lsn > upto {
                break;
            }
            let prev = m.prev_lsn_pg;
            if prev > self.scl && !self.records.contains(prev) {
                let below = self
                    .records
                    .range(..prev)
                    .next_back()
                    .map_or(self.scl, |b| b.lsn)
                    .max(self.scl);
                ranges.push((below, prev));
            }
        }
        let top = self.highest_lsn().max(self.scl);
        if top < upto {
            ranges.push((top, upto));
        }
        ranges
    }

    /// Known gaps in the chain above the SCL (records held there whose predecessor is not).
    pub fn holes(&self) -> u32 {
        let holes = self
            .records
            .range(Lsn(self.scl.0 + 1)..)
            .filter(|m| m.prev_lsn_pg > self.scl && !self.records.contains(m.prev_lsn_pg))
            .count();
        u32::try_from(holes).unwrap_or(u32::MAX)
    }

    /// Records held per hot-log file.
    pub fn live_by_file(&self) -> &BTreeMap<u32, u64> {
        &self.live_by_file
    }

    fn advance_scl(&mut self) {
        if self.successors.is_empty() {
            return;
        }
        while let Some(next) = self.successors.remove(&self.scl) {
            self.scl = next;
        }
    }

    fn annulled(&self, epoch: VolumeEpoch, lsn: Lsn) -> bool {
        self.truncations.iter().any(|t| t.annuls(epoch, lsn))
    }

    /// Adds a truncation range (or seals one already held) and drops the records it
    /// annuls; the SCL is then recomputed from what is left. Returns the records dropped.
    /// A different range for an epoch that already has one is refused: each volume open
    /// owns its epoch and writes one range.
    pub fn add_truncation(&mut self, t: Truncation) -> Result<usize, String> {
        if let Some(held) = self.truncations.iter_mut().find(|h| h.epoch == t.epoch) {
            if !held.same_range(&t) {
                return Err(format!(
                    "epoch {} already truncated ({}, {}] here; refusing ({}, {}]",
                    t.epoch, held.start, held.end, t.start, t.end
                ));
            }
            held.sealed |= t.sealed;
            return Ok(0);
        }
        self.truncations.push(t);
        self.volume_epoch = self.volume_epoch.max(t.epoch);
        let gone: Vec<Lsn> = self
            .records
            .iter()
            .filter(|m| t.annuls(m.epoch, m.lsn))
            .map(|m| m.lsn)
            .collect();
        for lsn in &gone {
            self.forget(*lsn);
        }
        let dropped = gone.len();
        if dropped > 0 {
            self.scl = self.floor;
            self.successors = self
                .records
                .iter()
                .map(|m| (m.prev_lsn_pg, m.lsn))
                .collect();
            self.advance_scl();
        }
        Ok(dropped)
    }

    /// Truncation ranges held, in the order they arrived.
    pub fn truncations(&self) -> &[Truncation] {
        &self.truncations
    }

    /// Whether the volume open of `epoch` has written its range here.
    pub fn has_truncation(&self, epoch: VolumeEpoch) -> bool {
        self.truncations.iter().any(|t| t.epoch == epoch)
    }

    /// Whether records of `epoch` must wait for that epoch's truncation range: the segment
    /// holds records of older epochs only, any of which the range may annul. (Once records
    /// of `epoch` are held, the range was there when they came; older ones arriving later
    /// are refused as stale.)
    pub fn needs_truncation_for(&self, epoch: VolumeEpoch) -> bool {
        !self.records.is_empty() && self.max_record_epoch < epoch && !self.has_truncation(epoch)
    }

    /// The range of the highest epoch, sealed or not, and the highest sealed one.
    pub fn latest_truncations(&self) -> (Option<Truncation>, Option<Truncation>) {
        let latest = self.truncations.iter().max_by_key(|t| t.epoch).copied();
        let sealed = self
            .truncations
            .iter()
            .filter(|t| t.sealed)
            .max_by_key(|t| t.epoch)
            .copied();
        (latest, sealed)
    }

    pub fn observe_epoch(&mut self, volume: VolumeEpoch) {
        self.volume_epoch = self.volume_epoch.max(volume);
    }

    pub fn membership_epoch(&self) -> MembershipEpoch {
        self.membership.epoch
    }

    /// Whether a membership change took `node` out of this PG: the segment stays on disk
    /// but gossips no more, and writers no longer send to it.
    pub fn retired_from(&self, node: NodeId) -> bool {
        match self.membership.members {
            Members::Placement => false,
            Members::Stable(set) => !set.contains(&node),
            Members::Transitional { old, new } => !old.contains(&node) && !new.contains(&node),
        }
    }

    pub fn scl(&self) -> Lsn {
        self.scl
    }

    /// The highest LSN received, also when it has left memory below the floor.
    pub fn highest_lsn(&self) -> Lsn {
        self.records
            .last()
            .map_or(Lsn::NONE, |m| m.lsn)
            .max(self.floor)
    }

    pub fn record_count(&self) -> u64 {
        self.records.len() as u64
    }

    /// Records with `after < lsn <= to`, in LSN order.
    pub fn range(&self, after: Lsn, to: Lsn) -> impl Iterator<Item = (Lsn, RecordMeta)> + '_ {
        let hi = if to <= after { after } else { to };
        self.records
            .range((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Included(hi),
            ))
            .map(|m| (m.lsn, *m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hexad_client::{PgIndex, VolumeId};

    fn seg() -> Segment {
        Segment::new(SegmentKey {
            volume: VolumeId(1),
            pg: PgIndex(0),
        })
    }
    const E1: VolumeEpoch = VolumeEpoch(1);
    const LOC: RecordLoc = RecordLoc {
        file: 0,
        offset: 0,
        bytes: 1,
    };

    fn meta(lsn: Lsn, prev_lsn_pg: Lsn, epoch: VolumeEpoch) -> RecordMeta {
        RecordMeta {
            lsn,
            prev_lsn_pg,
            page_link: PageLink::Exact(Lsn::NONE),
            epoch,
            cpl: false,
            page: PageNo(lsn.0 % 3),
            loc: LOC,
        }
    }

    #[test]
    fn a_page_chain_proves_completeness_past_a_hole_in_the_pg() {
        let p = PageNo(7);
        let mut s = seg();
        let rec = |lsn: u64, prev_pg: u64, page: PageNo, link: PageLink| RecordMeta {
            lsn: Lsn(lsn),
            prev_lsn_pg: Lsn(prev_pg),
            page_link: link,
            epoch: E1,
            cpl: true,
            page,
            loc: LOC,
        };
        // Page 7 at 1, 3 and 5; another page's record 4 is missing (SCL stays 3).
        s.insert(rec(1, 0, p, PageLink::Exact(Lsn(0))));
        s.insert(rec(2, 1, PageNo(8), PageLink::Exact(Lsn(0))));
        s.insert(rec(3, 2, p, PageLink::Exact(Lsn(1))));
        s.insert(rec(5, 4, p, PageLink::Exact(Lsn(3))));
        assert_eq!(s.scl(), Lsn(3));
        assert!(s.page_chain_complete(p, Lsn(5), Lsn(6), Lsn::NONE));
        assert!(s.page_chain_complete(p, Lsn(5), Lsn(5), Lsn(3)));
        // A stale head (record 5 is above it) and a head above the read point prove nothing.
        assert!(!s.page_chain_complete(p, Lsn(3), Lsn(6), Lsn::NONE));
        assert!(!s.page_chain_complete(p, Lsn(5), Lsn(4), Lsn::NONE));
        // A head this segment lacks, or a link to a record it lacks, proves nothing.
        assert!(!s.page_chain_complete(p, Lsn(6), Lsn(6), Lsn::NONE));
        s.insert(rec(9, 8, PageNo(9), PageLink::Exact(Lsn(0))));
        s.insert(rec(10, 9, PageNo(9), PageLink::Exact(Lsn(6))));
        assert!(!s.page_chain_complete(PageNo(9), Lsn(10), Lsn(10), Lsn::NONE));
        // A bound (the writer's first write of the page after an open) proves the chain
        // only down to a stored version at or above it.
        s.insert(rec(12, 11, PageNo(10), PageLink::AtMost(Lsn(8))));
        assert!(!s.page_chain_complete(PageNo(10), Lsn(12), Lsn(12), Lsn(4)));
        assert!(s.page_chain_complete(PageNo(10), Lsn(12), Lsn(12), Lsn(8)));
        // The head itself in the stored version; a head at the read point.
        assert!(s.page_chain_complete(PageNo(11), Lsn(4), Lsn(12), Lsn(4)));
        assert!(s.page_chain_complete(p, Lsn(5), Lsn(5), Lsn::NONE));
    }

    /// The floor follows the oldest record not yet in its page's stored version; before,
    /// it waited until every page was stored up to the target, which under steady appends
    /// (most pages a few records behind) kept it at 0 until the log filled.
    #[test]
    fn the_floor_stops_below_the_oldest_record_not_yet_stored() {
        let mut s = seg();
        // Pages (LSN % 3): 1 holds 1 and 4, 2 holds 2 and 5, 0 holds 3 and 6.
        for lsn in 1..=6 {
            s.insert(meta(Lsn(lsn), Lsn(lsn - 1), E1));
        }
        assert_eq!(s.floor_candidate(Lsn(6)), None, "nothing is stored");
        s.stored(PageNo(1), Lsn(4));
        s.stored(PageNo(2), Lsn(2));
        s.stored(PageNo(0), Lsn(6));
        assert_eq!(s.floor_candidate(Lsn(6)), Some(Lsn(4)), "5 is not stored");
        assert_eq!(
            s.floor_candidate(Lsn(3)),
            Some(Lsn(3)),
            "the target bounds it"
        );
        s.advance_floor(Lsn(4));
        assert_eq!(s.floor_candidate(Lsn(6)), None, "still below 5");
        s.stored(PageNo(2), Lsn(5));
        assert_eq!(s.floor_candidate(Lsn(6)), Some(Lsn(6)));
        assert_eq!(s.floor_candidate(Lsn(5)), Some(Lsn(5)));
    }

    #[test]
    fn the_highest_lsn_counts_records_folded_below_the_floor() {
        let mut s = seg();
        s.insert(meta(Lsn(1), Lsn(0), E1));
        s.insert(meta(Lsn(2), Lsn(1), E1));
        s.advance_floor(Lsn(2));
        assert_eq!(s.record_count(), 0);
        assert_eq!(s.highest_lsn(), Lsn(2));
        assert!(
            !s.insert(meta(Lsn(2), Lsn(1), E1)),
            "a resend below the floor"
        );
    }

    #[test]
    fn scl_stops_below_a_gap_and_advances_when_filled() {
        let mut s = seg();
        // The PG's chain is 10 -> 20 -> 30 -> 40.
        s.insert(meta(Lsn(10), Lsn(0), E1));
        s.insert(meta(Lsn(30), Lsn(20), E1));
        s.insert(meta(Lsn(40), Lsn(30), E1));
        assert_eq!(s.scl(), Lsn(10));
        assert_eq!(s.highest_lsn(), Lsn(40));
        s.insert(meta(Lsn(20), Lsn(10), E1));
        assert_eq!(s.scl(), Lsn(40));
        s.insert(meta(Lsn(20), Lsn(10), E1)); // a resend changes nothing
        assert_eq!((s.scl(), s.record_count()), (Lsn(40), 4));
    }

    #[test]
    fn a_truncation_drops_older_records_in_its_range_and_refuses_them_later() {
        let mut s = seg();
        for l in 1..=6 {
            s.insert(meta(Lsn(l), Lsn(l - 1), E1));
        }
        assert!(!s.needs_truncation_for(E1));
        assert!(s.needs_truncation_for(VolumeEpoch(2)));
        let t = Truncation {
            epoch: VolumeEpoch(2),
            start: Lsn(4),
            end: Lsn(100),
            sealed: false,
        };
        assert_eq!(s.add_truncation(t), Ok(2));
        assert_eq!((s.scl(), s.record_count()), (Lsn(4), 4));
        assert!(!s.needs_truncation_for(VolumeEpoch(2)));
        // A late copy of an annulled record is refused; the new epoch's own records are not.
        assert!(!s.insert(meta(Lsn(5), Lsn(4), E1)));
        assert!(s.insert(meta(Lsn(101), Lsn(4), VolumeEpoch(2))));
        assert_eq!(s.scl(), Lsn(101));
        // Sealing is idempotent; another range for the same epoch is refused.
        assert_eq!(s.add_truncation(Truncation { sealed: true, ..t }), Ok(0));
        assert_eq!(s.latest_truncations().1.map(|t| t.start), Some(Lsn(4)));
        assert!(s.add_truncation(Truncation { start: Lsn(3), ..t }).is_err());
    }

    #[test]
    fn missing_ranges_are_the_gaps_of_the_backlink_chain() {
        let mut s = seg();
        let e = VolumeEpoch(1);
        // The PG's chain: 1 → 4 → 9 → 12 → 20 (other LSNs belong to other PGs).
        for (lsn, prev) in [(1, 0), (12, 9), (20, 12)] {
            s.insert(meta(Lsn(lsn), Lsn(prev), e));
        }
        assert_eq!(s.scl(), Lsn(1));
        assert_eq!(s.holes(), 1);
        assert_eq!(
            s.missing_ranges(Lsn(30)),
            vec![(Lsn(1), Lsn(9)), (Lsn(20), Lsn(30))]
        );
        s.insert(meta(Lsn(9), Lsn(4), e));
        assert_eq!(s.holes(), 1);
        assert_eq!(
            s.missing_ranges(Lsn(20)),
            vec![(Lsn(1), Lsn(4))],
            "nothing above the highest record when the peer has no more"
        );
        s.insert(meta(Lsn(4), Lsn(1), e));
        assert_eq!((s.scl(), s.holes()), (Lsn(20), 0));
        assert!(s.missing_ranges(Lsn(20)).is_empty());
    }

    #[test]
    fn a_baseline_moves_floor_and_scl_and_keeps_the_chain_above_it() {
        let mut s = seg();
        let e = VolumeEpoch(1);
        // Records 3 and 50 → 60 arrived; everything up to 40 comes as pages.
        for (lsn, prev) in [(3, 2), (50, 40), (60, 50)] {
            s.insert(meta(Lsn(lsn), Lsn(prev), e));
        }
        assert_eq!(s.scl(), Lsn::NONE);
        s.adopt_baseline(Lsn(40));
        assert_eq!(
            (s.floor(), s.scl(), s.record_count()),
            (Lsn(40), Lsn(60), 2)
        );
        assert!(!s.holds(Lsn(3)));
    }

    #[test]
    fn scl_is_zero_without_the_first_record() {
        let mut s = seg();
        s.insert(meta(Lsn(7), Lsn(5), E1));
        assert_eq!(s.scl(), Lsn(0));
    }
}
