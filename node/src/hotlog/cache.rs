//! The newest hot-log blocks, kept in memory as written, so that the coalescer and page
//! reads take records from memory instead of reading them back from the disk one 4 KiB
//! block at a time (records of one page are spread over many blocks). Sans-IO.
//!
//! Bounded by bytes; the oldest block goes first. A block written over an older one (a
//! recycled file) removes every cached block it overlaps, so the blocks cached for one file
//! never overlap each other and a lookup finds only the bytes last written there. A record
//! whose block is not cached is read from the disk as before: the cache changes where bytes
//! come from, never what they are (the record's CRC is checked either way).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::format::RecordLoc;

#[derive(Debug)]
pub struct BlockCache {
    budget_bytes: usize,
    cached_bytes: usize,
    /// `(file, offset)` → the block's sequence number and bytes.
    blocks: BTreeMap<(u32, u64), (u64, Bytes)>,
    /// Blocks in the order they came, for eviction: `(seq, file, offset)`. An entry whose
    /// block was already replaced (another seq at that place) is skipped.
    order: VecDeque<(u64, u32, u64)>,
}

impl BlockCache {
    /// A cache of at most `budget_bytes` (0: nothing is cached).
    pub fn new(budget_bytes: usize) -> BlockCache {
        BlockCache {
            budget_bytes,
            cached_bytes: 0,
            blocks: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keeps block `seq`, written at `offset` of `file`, evicting the oldest blocks past the
    /// budget.
    pub fn insert(&mut self, seq: u64, file: u32, offset: u64, block: Bytes) {
        let end = offset + block.len() as u64;
        // Cached blocks of a file do not overlap, so walking back from the new block's end
        // meets the overlapping ones first and stops at the first that ends before it.
        while let Some((&(f, o), (_, b))) = self.blocks.range(..(file, end)).next_back() {
            if f != file || o + b.len() as u64 <= offset {
                break;
            }
            self.remove((f, o));
        }
        if block.len() > self.budget_bytes {
            return;
        }
        self.cached_bytes += block.len();
        self.blocks.insert((file, offset), (seq, block));
        self.order.push_back((seq, file, offset));
        while self.cached_bytes > self.budget_bytes {
            let (old_seq, f, o) = self.order.pop_front().expect("bytes are cached");
            if self.blocks.get(&(f, o)).is_some_and(|(s, _)| *s == old_seq) {
                self.remove((f, o));
            }
        }
        // Entries of blocks removed by an overlap stay in `order` until they reach its front.
        while self
            .order
            .front()
            .is_some_and(|&(s, f, o)| self.blocks.get(&(f, o)).is_none_or(|(k, _)| *k != s))
        {
            self.order.pop_front();
        }
    }

    fn remove(&mut self, key: (u32, u64)) {
        if let Some((_, b)) = self.blocks.remove(&key) {
            self.cached_bytes -= b.len();
        }
    }

    /// The record's bytes, if its whole block is cached (zero-copy).
    pub fn get(&self, loc: RecordLoc) -> Option<Bytes> {
        let (&(f, o), (_, b)) = self.blocks.range(..=(loc.file, loc.offset)).next_back()?;
        if f != loc.file {
            return None;
        }
        let from = usize::try_from(loc.offset - o).ok()?;
        let to = from + loc.bytes as usize;
        (to <= b.len()).then(|| b.slice(from..to))
    }

    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    fn loc(file: u32, offset: u64, bytes: u32) -> RecordLoc {
        RecordLoc {
            file,
            offset,
            bytes,
        }
    }

    #[test]
    fn finds_a_record_inside_a_cached_block_only() {
        let mut c = BlockCache::new(1 << 20);
        c.insert(1, 0, 0, block(1, 8192));
        c.insert(2, 0, 8192, block(2, 4096));
        assert_eq!(c.get(loc(0, 100, 50)).unwrap(), block(1, 50));
        assert_eq!(c.get(loc(0, 8192 + 10, 20)).unwrap(), block(2, 20));
        // Runs past its block's end, another file, past everything cached.
        assert!(c.get(loc(0, 8100, 200)).is_none());
        assert!(c.get(loc(1, 100, 50)).is_none());
        assert!(c.get(loc(0, 16384, 10)).is_none());
    }

    #[test]
    fn a_block_written_over_older_ones_replaces_every_one_it_overlaps() {
        let mut c = BlockCache::new(1 << 20);
        c.insert(1, 3, 0, block(1, 4096));
        c.insert(2, 3, 4096, block(2, 8192));
        c.insert(3, 3, 12288, block(3, 4096));
        // The file is recycled: a new block spans the first two old ones.
        c.insert(9, 3, 0, block(9, 8192));
        assert_eq!(c.get(loc(3, 5000, 10)).unwrap(), block(9, 10));
        // The rest of old block 2 (8192..12288) is gone with it: never stale bytes.
        assert!(c.get(loc(3, 9000, 10)).is_none());
        assert_eq!(c.get(loc(3, 12288, 10)).unwrap(), block(3, 10));
        assert_eq!(c.cached_bytes(), 8192 + 4096);
    }

    #[test]
    fn the_oldest_blocks_go_first_past_the_budget() {
        let mut c = BlockCache::new(3 * 4096);
        for seq in 0..5u64 {
            c.insert(seq, 0, seq * 4096, block(seq as u8, 4096));
        }
        assert!(c.get(loc(0, 0, 10)).is_none());
        assert!(c.get(loc(0, 4096, 10)).is_none());
        for seq in 2..5u64 {
            assert_eq!(c.get(loc(0, seq * 4096, 10)).unwrap(), block(seq as u8, 10));
        }
        assert_eq!(c.cached_bytes(), 3 * 4096);
        // Replacing a block in place, then evicting: the newer copy's entry decides.
        c.insert(7, 0, 2 * 4096, block(7, 4096));
        c.insert(8, 0, 5 * 4096, block(8, 4096));
        assert_eq!(c.get(loc(0, 2 * 4096, 10)).unwrap(), block(7, 10));
        assert!(c.cached_bytes() <= 3 * 4096);
        let off = BlockCache::new(0);
        assert!(off.get(loc(0, 0, 1)).is_none());
    }
}
