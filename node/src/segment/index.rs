//! A segment's in-memory record index: the records it holds in LSN order, and each page's
//! LSNs in order. Records reach a segment in LSN order almost always (a writer's batches
//! go forward; only gossip filling a hole goes back), so both are sorted deques: an insert
//! is a push at the back, the floor drops records from the front, and a lookup or range is
//! a search. The ordered maps they replace cost a tree walk and node allocations per
//! record on the write path.
//!
//! A search guesses the position from the first and last LSN (a segment's LSNs are spread
//! about evenly: a PG's share of the volume's) and gallops from there, so it touches a few
//! entries near the answer instead of the ~17 cache lines of a binary search over 100,000.

use std::collections::{HashMap, VecDeque};
use std::ops::{Bound, RangeBounds};

use hexad_client::{Lsn, PageNo};

use super::RecordMeta;

/// Records in strictly increasing LSN order.
#[derive(Debug, Default)]
pub struct Records {
    by_lsn: VecDeque<RecordMeta>,
}

/// The index of the first of `len` sorted keys (`key_at(0..len)`) that is at least `key`:
/// `partition_point(|k| k < key)`, found by interpolating between the first and last keys
/// and galloping from the guess to a bracket, then bisecting the bracket.
fn lower_bound(len: usize, key_at: impl Fn(usize) -> u64, key: u64) -> usize {
    if len == 0 || key_at(0) >= key {
        return 0;
    }
    let (first, last) = (key_at(0), key_at(len - 1));
    if last < key {
        return len;
    }
    // From here on key_at(lo) < key <= key_at(hi); first < key <= last, so last > first.
    let offset = u128::from(key - first) * (len as u128 - 1) / u128::from(last - first);
    let guess = usize::try_from(offset).expect("at most len - 1");
    let (mut lo, mut hi);
    let mut step = 1;
    if key_at(guess) < key {
        lo = guess;
        loop {
            let probe = lo + step;
            if probe >= len - 1 {
                hi = len - 1;
                break;
            }
            if key_at(probe) >= key {
                hi = probe;
                break;
            }
            lo = probe;
            step *= 2;
        }
    } else {
        hi = guess;
        loop {
            if hi <= step {
                lo = 0;
                break;
            }
            let probe = hi - step;
            if key_at(probe) < key {
                lo = probe;
                break;
            }
            hi = probe;
            step *= 2;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if key_at(mid) < key {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The index of the first key above `key`: `partition_point(|k| k <= key)`.
fn upper_bound(len: usize, key_at: impl Fn(usize) -> u64, key: u64) -> usize {
    match key.checked_add(1) {
        Some(next) => lower_bound(len, key_at, next),
        None => len,
    }
}

impl Records {
    fn search(&self, lsn: Lsn) -> Result<usize, usize> {
        let at = lower_bound(self.by_lsn.len(), |i| self.by_lsn[i].lsn.0, lsn.0);
        match self.by_lsn.get(at) {
            Some(m) if m.lsn == lsn => Ok(at),
            _ => Err(at),
        }
    }

    /// Removes and returns the oldest record if its LSN is at most `upto`.
    pub fn pop_front_through(&mut self, upto: Lsn) -> Option<RecordMeta> {
        if self.by_lsn.front()?.lsn <= upto {
            self.by_lsn.pop_front()
        } else {
            None
        }
    }

    /// Adds `m`; false (and nothing changes) if its LSN is held already.
    pub fn insert(&mut self, m: RecordMeta) -> bool {
        if self.by_lsn.back().is_none_or(|last| last.lsn < m.lsn) {
            self.by_lsn.push_back(m);
            return true;
        }
        match self.search(m.lsn) {
            Ok(_) => false,
            Err(at) => {
                self.by_lsn.insert(at, m);
                true
            }
        }
    }

    pub fn get(&self, lsn: Lsn) -> Option<&RecordMeta> {
        self.search(lsn).ok().map(|i| &self.by_lsn[i])
    }

    pub fn contains(&self, lsn: Lsn) -> bool {
        self.search(lsn).is_ok()
    }

    pub fn remove(&mut self, lsn: Lsn) -> Option<RecordMeta> {
        let i = self.search(lsn).ok()?;
        self.by_lsn.remove(i)
    }

    /// The records whose LSN lies in `range`, in LSN order.
    pub fn range(
        &self,
        range: impl RangeBounds<Lsn>,
    ) -> impl DoubleEndedIterator<Item = &RecordMeta> + '_ {
        let (len, key_at) = (self.by_lsn.len(), |i: usize| self.by_lsn[i].lsn.0);
        let start = match range.start_bound() {
            Bound::Included(l) => lower_bound(len, key_at, l.0),
            Bound::Excluded(l) => upper_bound(len, key_at, l.0),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(l) => upper_bound(len, key_at, l.0),
            Bound::Excluded(l) => lower_bound(len, key_at, l.0),
            Bound::Unbounded => len,
        };
        self.by_lsn.range(start..end.max(start))
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &RecordMeta> + '_ {
        self.by_lsn.iter()
    }

    pub fn last(&self) -> Option<&RecordMeta> {
        self.by_lsn.back()
    }

    pub fn len(&self) -> usize {
        self.by_lsn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_lsn.is_empty()
    }
}

/// Each page's LSNs, in increasing order.
#[derive(Debug, Default)]
pub struct ByPage {
    pages: HashMap<PageNo, VecDeque<Lsn>>,
}

impl ByPage {
    pub fn insert(&mut self, page: PageNo, lsn: Lsn) {
        let lsns = self.pages.entry(page).or_default();
        if lsns.back().is_none_or(|last| *last < lsn) {
            lsns.push_back(lsn);
        } else if let Err(at) = lsns.binary_search(&lsn) {
            lsns.insert(at, lsn);
        }
    }

    pub fn remove(&mut self, page: PageNo, lsn: Lsn) {
        let Some(lsns) = self.pages.get_mut(&page) else {
            return;
        };
        if lsns.front() == Some(&lsn) {
            lsns.pop_front();
        } else if let Ok(at) = lsns.binary_search(&lsn) {
            lsns.remove(at);
        }
        if lsns.is_empty() {
            self.pages.remove(&page);
        }
    }

    /// The page's LSNs in `(after, upto]`, in order.
    pub fn range(
        &self,
        page: PageNo,
        after: Lsn,
        upto: Lsn,
    ) -> impl DoubleEndedIterator<Item = Lsn> + '_ {
        let (lsns, from, to) = self.bounds(page, after, upto);
        lsns.into_iter()
            .flat_map(move |l| l.range(from..to).copied())
    }

    /// How many LSNs of the page lie in `(after, upto]`.
    pub fn count(&self, page: PageNo, after: Lsn, upto: Lsn) -> usize {
        let (_, from, to) = self.bounds(page, after, upto);
        to - from
    }

    fn bounds(
        &self,
        page: PageNo,
        after: Lsn,
        upto: Lsn,
    ) -> (Option<&VecDeque<Lsn>>, usize, usize) {
        let Some(lsns) = self.pages.get(&page) else {
            return (None, 0, 0);
        };
        let key_at = |i: usize| lsns[i].0;
        let from = upper_bound(lsns.len(), key_at, after.0);
        let to = upper_bound(lsns.len(), key_at, upto.0).max(from);
        (Some(lsns), from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotlog::format::RecordLoc;
    use hexad_client::wire::PageLink;
    use hexad_client::VolumeEpoch;

    fn meta(lsn: u64) -> RecordMeta {
        RecordMeta {
            lsn: Lsn(lsn),
            prev_lsn_pg: Lsn(lsn - 1),
            page_link: PageLink::Exact(Lsn::NONE),
            epoch: VolumeEpoch(1),
            cpl: true,
            page: PageNo(lsn % 3),
            loc: RecordLoc {
                file: 0,
                offset: lsn * 64,
                bytes: 64,
            },
        }
    }

    /// The deque against a `BTreeSet` model, over inserts in and out of order, duplicates,
    /// removals and ranges of every bound.
    #[test]
    fn records_behave_as_an_ordered_map() {
        let mut rng = crate::disk::sim::Rng::new(7);
        let mut r = Records::default();
        let mut model = std::collections::BTreeSet::new();
        for step in 0..4000u64 {
            let lsn = if rng.below(4) == 0 {
                1 + rng.below(3000)
            } else {
                step + 1
            };
            match rng.below(5) {
                0 => assert_eq!(
                    r.remove(Lsn(lsn)).map(|m| m.lsn),
                    model.remove(&lsn).then_some(Lsn(lsn))
                ),
                _ => assert_eq!(r.insert(meta(lsn)), model.insert(lsn)),
            }
            let (a, b) = (rng.below(4000), rng.below(4000));
            let got: Vec<u64> = r.range(Lsn(a)..=Lsn(b)).map(|m| m.lsn.0).collect();
            let want: Vec<u64> = if a <= b {
                model.range(a..=b).copied().collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, want);
            let got: Vec<u64> = r
                .range((Bound::Excluded(Lsn(a)), Bound::Unbounded))
                .map(|m| m.lsn.0)
                .collect();
            let want: Vec<u64> = model.range(a + 1..).copied().collect();
            assert_eq!(got, want);
            assert_eq!(r.contains(Lsn(a)), model.contains(&a));
            assert_eq!(r.len(), model.len());
        }
        assert_eq!(r.last().map(|m| m.lsn.0), model.last().copied());
    }

    /// The interpolating search against `partition_point`, over evenly spread keys,
    /// clusters with long gaps between them, runs of one key and every probe around them.
    #[test]
    fn interpolating_search_agrees_with_partition_point() {
        let mut rng = crate::disk::sim::Rng::new(11);
        for round in 0..300 {
            let len = rng.below(200) as usize;
            let mut keys = Vec::with_capacity(len);
            let mut k = rng.below(5);
            for _ in 0..len {
                k += match round % 3 {
                    0 => 1 + rng.below(3),
                    1 if rng.below(20) == 0 => 1 + rng.below(1 << 40),
                    _ => rng.below(2),
                };
                keys.push(k);
            }
            let top = keys.last().copied().unwrap_or(0);
            let mut probes: Vec<u64> = keys
                .iter()
                .flat_map(|k| [k.saturating_sub(1), *k, k + 1])
                .collect();
            probes.extend([0, top + 1, top + 1000, u64::MAX]);
            for _ in 0..50 {
                probes.push(rng.below(top + 2));
            }
            for key in probes {
                let at = |i: usize| keys[i];
                assert_eq!(
                    lower_bound(len, at, key),
                    keys.partition_point(|k| *k < key),
                    "{keys:?} {key}"
                );
                assert_eq!(
                    upper_bound(len, at, key),
                    keys.partition_point(|k| *k <= key),
                    "{keys:?} {key}"
                );
            }
        }
    }

    #[test]
    fn pages_keep_their_lsns_in_order() {
        let mut p = ByPage::default();
        for l in [5, 9, 7, 12, 7] {
            p.insert(PageNo(1), Lsn(l));
        }
        p.insert(PageNo(2), Lsn(6));
        let all: Vec<u64> = p
            .range(PageNo(1), Lsn::NONE, Lsn(100))
            .map(|l| l.0)
            .collect();
        assert_eq!(all, vec![5, 7, 9, 12]);
        assert_eq!(p.count(PageNo(1), Lsn(5), Lsn(9)), 2);
        assert_eq!(p.count(PageNo(1), Lsn(9), Lsn(5)), 0);
        assert_eq!(p.count(PageNo(3), Lsn::NONE, Lsn(100)), 0);
        p.remove(PageNo(1), Lsn(7));
        p.remove(PageNo(2), Lsn(6));
        assert_eq!(
            p.range(PageNo(1), Lsn(4), Lsn(12))
                .map(|l| l.0)
                .collect::<Vec<_>>(),
            vec![5, 9, 12]
        );
        assert!(!p.pages.contains_key(&PageNo(2)));
    }
}
