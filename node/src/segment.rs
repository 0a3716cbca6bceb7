//! One segment's in-memory state: which records it holds, where they are, its SCL and
//! epochs. Rebuilt from the hot log at restart.

use std::collections::{BTreeMap, HashMap};

use hexad_client::{Lsn, MembershipEpoch, VolumeEpoch};

use crate::hotlog::format::{RecordLoc, SegmentKey};

#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    pub prev_lsn_pg: Lsn,
    pub loc: RecordLoc,
}

/// Records received for one PG replica.
///
/// SCL (segment complete LSN) is the highest LSN up to which the segment holds every
/// record of its PG: the end of the `prev_lsn_pg` chain starting at the PG's first record
/// (whose backlink is 0). Records above a hole wait in `successors` until it is filled.
#[derive(Debug)]
pub struct Segment {
    pub key: SegmentKey,
    records: BTreeMap<Lsn, RecordMeta>,
    /// `prev_lsn_pg -> lsn` for received records above the SCL.
    successors: HashMap<Lsn, Lsn>,
    scl: Lsn,
    pub volume_epoch: VolumeEpoch,
    pub membership_epoch: MembershipEpoch,
}

impl Segment {
    pub fn new(key: SegmentKey) -> Segment {
        Segment {
            key,
            records: BTreeMap::new(),
            successors: HashMap::new(),
            scl: Lsn::NONE,
            volume_epoch: VolumeEpoch(0),
            membership_epoch: MembershipEpoch(0),
        }
    }

    /// Adds a durable record. A duplicate LSN (a resend) keeps the first copy.
    pub fn insert(&mut self, lsn: Lsn, prev_lsn_pg: Lsn, loc: RecordLoc) {
        assert!(
            lsn > Lsn::NONE && prev_lsn_pg < lsn,
            "record invariants are checked at decode"
        );
        if self.records.contains_key(&lsn) {
            return;
        }
        self.records.insert(lsn, RecordMeta { prev_lsn_pg, loc });
        if lsn > self.scl {
            self.successors.insert(prev_lsn_pg, lsn);
            while let Some(next) = self.successors.remove(&self.scl) {
                self.scl = next;
            }
        }
    }

    pub fn observe_epochs(&mut self, volume: VolumeEpoch, membership: MembershipEpoch) {
        self.volume_epoch = self.volume_epoch.max(volume);
        self.membership_epoch = self.membership_epoch.max(membership);
    }

    pub fn scl(&self) -> Lsn {
        self.scl
    }

    pub fn highest_lsn(&self) -> Lsn {
        self.records
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Lsn::NONE)
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
            .map(|(l, m)| (*l, *m))
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
    const LOC: RecordLoc = RecordLoc {
        file: 0,
        offset: 0,
        bytes: 1,
    };

    #[test]
    fn scl_stops_below_a_gap_and_advances_when_filled() {
        let mut s = seg();
        // The PG's chain is 10 -> 20 -> 30 -> 40.
        s.insert(Lsn(10), Lsn(0), LOC);
        s.insert(Lsn(30), Lsn(20), LOC);
        s.insert(Lsn(40), Lsn(30), LOC);
        assert_eq!(s.scl(), Lsn(10));
        assert_eq!(s.highest_lsn(), Lsn(40));
        s.insert(Lsn(20), Lsn(10), LOC);
        assert_eq!(s.scl(), Lsn(40));
        s.insert(Lsn(20), Lsn(10), LOC); // a resend changes nothing
        assert_eq!((s.scl(), s.record_count()), (Lsn(40), 4));
    }

    #[test]
    fn scl_is_zero_without_the_first_record() {
        let mut s = seg();
        s.insert(Lsn(7), Lsn(5), LOC);
        assert_eq!(s.scl(), Lsn(0));
    }
}
