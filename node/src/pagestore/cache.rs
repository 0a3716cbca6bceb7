//! The bytes of recently read or written page-store slots, kept in memory so that the
//! coalescer does not read a page's two slots back from the disk each time it builds a
//! new version of it (two `O_DIRECT` reads per version: at 64 commits in flight they were
//! most of the disk's reads, bench/RESULTS.md issue #8). Sans-IO.
//!
//! The cache changes where bytes come from, never what they are: an entry holds exactly
//! what the file holds at that slot once the write or read that filled it completed. A
//! write that fails drops its slots (the file's contents there are unknown), and a read
//! from the disk (`GetPage` always reads the disk, so damage is found) refreshes them, so
//! the coalescer sees a slot found corrupt as corrupt. Nothing survives a restart or a
//! simulated power cut: a store that comes back starts empty.
//!
//! Bounded by a number of slots; the slot cached first goes first.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::hotlog::format::SegmentKey;

/// A slot: its segment and its offset in the segment's file.
type SlotAt = (SegmentKey, u64);

#[derive(Debug)]
pub struct SlotCache {
    capacity: usize,
    /// `(segment, slot offset)` → the slot's bytes and the insertion that put them there.
    slots: HashMap<SlotAt, (u64, Rc<[u8]>)>,
    /// Insertions in order, for eviction; one whose slot was filled again since (another
    /// insertion number) or dropped is skipped.
    order: VecDeque<(u64, SegmentKey, u64)>,
    next: u64,
}

impl SlotCache {
    /// A cache of at most `capacity` slots (0: nothing is cached).
    pub fn new(capacity: usize) -> SlotCache {
        SlotCache {
            capacity,
            slots: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    pub fn get(&self, key: SegmentKey, offset: u64) -> Option<Rc<[u8]>> {
        self.slots.get(&(key, offset)).map(|(_, b)| b.clone())
    }

    /// Records that the file holds `bytes` at `offset` now.
    pub fn insert(&mut self, key: SegmentKey, offset: u64, bytes: Rc<[u8]>) {
        if self.capacity == 0 {
            return;
        }
        self.next += 1;
        self.slots.insert((key, offset), (self.next, bytes));
        self.order.push_back((self.next, key, offset));
        while self.slots.len() > self.capacity {
            let (n, k, o) = self.order.pop_front().expect("slots are cached");
            if self.slots.get(&(k, o)).is_some_and(|(m, _)| *m == n) {
                self.slots.remove(&(k, o));
            }
        }
        // Skipped entries pile up when the same slots are filled again and again.
        if self.order.len() > 2 * self.capacity + 64 {
            let slots = &self.slots;
            self.order
                .retain(|(n, k, o)| slots.get(&(*k, *o)).is_some_and(|(m, _)| m == n));
        }
    }

    /// Forgets the slot (its bytes on the file are not known any more).
    pub fn remove(&mut self, key: SegmentKey, offset: u64) {
        self.slots.remove(&(key, offset));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hexad_client::{PgIndex, VolumeId};

    fn key(pg: u32) -> SegmentKey {
        SegmentKey {
            volume: VolumeId(1),
            pg: PgIndex(pg),
        }
    }

    fn bytes(b: u8) -> Rc<[u8]> {
        vec![b; 8].into()
    }

    #[test]
    fn the_last_write_wins_and_the_oldest_slot_goes_first() {
        let mut c = SlotCache::new(2);
        c.insert(key(0), 0, bytes(1));
        c.insert(key(0), 8, bytes(2));
        c.insert(key(0), 0, bytes(3));
        assert_eq!(c.get(key(0), 0).as_deref(), Some(&[3u8; 8][..]));
        // Offset 8 is now the oldest insertion still current.
        c.insert(key(1), 0, bytes(4));
        assert_eq!(c.len(), 2);
        assert!(c.get(key(0), 8).is_none());
        assert!(c.get(key(0), 0).is_some() && c.get(key(1), 0).is_some());
        c.remove(key(1), 0);
        assert!(c.get(key(1), 0).is_none());
    }

    #[test]
    fn refilling_one_slot_forever_keeps_the_order_bounded() {
        let mut c = SlotCache::new(4);
        for i in 0..10_000u64 {
            c.insert(key(0), (i % 3) * 8, bytes(i as u8));
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 2 * 4 + 64);
    }

    #[test]
    fn a_cache_of_nothing_holds_nothing() {
        let mut c = SlotCache::new(0);
        c.insert(key(0), 0, bytes(1));
        assert!(c.get(key(0), 0).is_none());
    }
}
