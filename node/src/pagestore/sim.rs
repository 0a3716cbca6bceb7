//! Page-store files in memory, for simulations: reads see every completed write (like a
//! page cache), `sync` makes a segment's writes durable, and a power cut keeps each
//! unsynced write whole, drops it, or tears it at a 4 KiB sector boundary, chosen by a
//! seeded generator. Files are sparse: a sector never written reads as zeros. A sync can be
//! made to fail (`fail_next_syncs`) as Linux fails an `fsync`: the writes it should have
//! made durable stay visible to reads but never reach the media, even if a later sync
//! succeeds; a power cut loses them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::format::EXTENT_BYTES;
use crate::disk::sim::Rng;
use crate::hotlog::format::SegmentKey;

const SECTOR_BYTES: usize = 4096;

#[derive(Default, Clone)]
struct SimFile {
    /// Sector index → bytes, as the media holds them.
    durable: BTreeMap<u64, Vec<u8>>,
    /// Completed writes since the last sync, in order: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
    /// Writes a failed sync left behind: read back, never durable (older than `pending`).
    lost: Vec<(u64, Vec<u8>)>,
}

impl SimFile {
    /// The file as a read sees it: the media with every pending write on top.
    fn sector(&self, index: u64) -> Vec<u8> {
        let mut out = self
            .durable
            .get(&index)
            .cloned()
            .unwrap_or_else(|| vec![0; SECTOR_BYTES]);
        let start = index * SECTOR_BYTES as u64;
        for (at, data) in self.lost.iter().chain(&self.pending) {
            let end = at + data.len() as u64;
            if *at < start + SECTOR_BYTES as u64 && end > start {
                let from = start.max(*at);
                let to = (start + SECTOR_BYTES as u64).min(end);
                out[(from - start) as usize..(to - start) as usize]
                    .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
            }
        }
        out
    }

    fn apply(durable: &mut BTreeMap<u64, Vec<u8>>, at: u64, data: &[u8]) {
        for (i, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
            let index = at / SECTOR_BYTES as u64 + i as u64;
            let sector = durable
                .entry(index)
                .or_insert_with(|| vec![0; SECTOR_BYTES]);
            sector[..chunk.len()].copy_from_slice(chunk);
        }
    }
}

pub struct SimPages {
    files: RefCell<HashMap<SegmentKey, SimFile>>,
    rng: RefCell<Rng>,
    /// Syncs still to fail.
    failing_syncs: std::cell::Cell<u32>,
}

impl SimPages {
    pub fn new(seed: u64) -> SimPages {
        SimPages {
            files: RefCell::default(),
            rng: RefCell::new(Rng::new(seed)),
            failing_syncs: std::cell::Cell::new(0),
        }
    }

    pub fn read(&self, key: SegmentKey, at: u64, bytes: usize) -> Vec<u8> {
        assert_eq!(at % SECTOR_BYTES as u64, 0, "aligned reads");
        let files = self.files.borrow();
        let mut out = Vec::with_capacity(bytes);
        let mut index = at / SECTOR_BYTES as u64;
        while out.len() < bytes {
            match files.get(&key) {
                Some(f) => out.extend_from_slice(&f.sector(index)),
                None => out.resize(out.len() + SECTOR_BYTES, 0),
            }
            index += 1;
        }
        out.truncate(bytes);
        out
    }

    /// Up to `count` extents at or after extent `from` that hold data, and where to go on.
    pub fn read_extents(
        &self,
        key: SegmentKey,
        from: u64,
        count: usize,
    ) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
        let per_extent = (EXTENT_BYTES / SECTOR_BYTES) as u64;
        let mut found = Vec::new();
        let mut next = Some(from);
        while let Some(extent) = next.filter(|_| found.len() < count) {
            let sector = {
                let files = self.files.borrow();
                let Some(f) = files.get(&key) else {
                    break;
                };
                let first = extent * per_extent;
                let durable = f.durable.range(first..).next().map(|(s, _)| *s);
                let pending = f
                    .lost
                    .iter()
                    .chain(&f.pending)
                    .filter_map(|(at, d)| {
                        let last = (at + d.len() as u64 - 1) / SECTOR_BYTES as u64;
                        (last >= first).then(|| (at / SECTOR_BYTES as u64).max(first))
                    })
                    .min();
                durable.into_iter().chain(pending).min()
            };
            match sector {
                Some(s) => {
                    let e = s / per_extent;
                    found.push((e, self.read(key, e * EXTENT_BYTES as u64, EXTENT_BYTES)));
                    next = Some(e + 1);
                }
                None => next = None,
            }
        }
        if found.len() < count {
            next = None;
        }
        (found, next)
    }

    pub fn write(&self, key: SegmentKey, at: u64, data: &[u8]) {
        assert_eq!(at % SECTOR_BYTES as u64, 0, "aligned writes");
        assert_eq!(data.len() % SECTOR_BYTES, 0, "whole sectors");
        self.files
            .borrow_mut()
            .entry(key)
            .or_default()
            .pending
            .push((at, data.to_vec()));
    }

    /// Makes the segment's completed writes durable, or fails (see the module comment).
    pub fn sync(&self, key: SegmentKey) -> std::io::Result<()> {
        let fail = self.failing_syncs.get() > 0;
        if fail {
            self.failing_syncs.set(self.failing_syncs.get() - 1);
        }
        if let Some(f) = self.files.borrow_mut().get_mut(&key) {
            let pending = std::mem::take(&mut f.pending);
            if fail {
                f.lost.extend(pending);
            } else {
                for (at, data) in pending {
                    SimFile::apply(&mut f.durable, at, &data);
                }
            }
        }
        if fail {
            return Err(std::io::Error::other("simulated page-store fsync failure"));
        }
        Ok(())
    }

    /// The next `n` syncs fail.
    pub fn fail_next_syncs(&self, n: u32) {
        self.failing_syncs.set(n);
    }

    /// The store after a power cut: each unsynced write kept, lost, or torn.
    #[must_use]
    pub fn crash(&self) -> SimPages {
        let mut rng = self.rng.borrow_mut();
        let mut files = HashMap::new();
        for (key, f) in self.files.borrow().iter() {
            let mut durable = f.durable.clone();
            for (at, data) in &f.pending {
                let sectors = (data.len() / SECTOR_BYTES) as u64;
                let keep = match rng.below(3) {
                    0 => 0,
                    1 => sectors,
                    _ => rng.below(sectors + 1),
                };
                SimFile::apply(&mut durable, *at, &data[..keep as usize * SECTOR_BYTES]);
            }
            files.insert(
                *key,
                SimFile {
                    durable,
                    pending: Vec::new(),
                    lost: Vec::new(),
                },
            );
        }
        SimPages {
            files: RefCell::new(files),
            rng: RefCell::new(Rng::new(rng.next_u64())),
            failing_syncs: std::cell::Cell::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hexad_client::{PgIndex, VolumeId};

    const KEY: SegmentKey = SegmentKey {
        volume: VolumeId(1),
        pg: PgIndex(0),
    };

    #[test]
    fn reads_see_writes_and_only_synced_ones_survive_for_sure() {
        let p = SimPages::new(1);
        p.write(KEY, 8192, &[7u8; 8192]);
        p.sync(KEY).unwrap();
        p.write(KEY, 3 * EXTENT_BYTES as u64, &[9u8; 4096]);
        assert_eq!(p.read(KEY, 8192, 4096), vec![7u8; 4096]);
        assert_eq!(p.read(KEY, 0, 4096), vec![0u8; 4096]);
        let (found, next) = p.read_extents(KEY, 0, 8);
        assert_eq!(
            found.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(next, None);
        let (found, next) = p.read_extents(KEY, 0, 1);
        assert_eq!((found.len(), next), (1, Some(1)));
        for seed in 0..20 {
            let p2 = SimPages::new(seed);
            p2.write(KEY, 0, &[5u8; 12288]);
            p2.sync(KEY).unwrap();
            p2.write(KEY, 0, &[6u8; 12288]);
            let after = p2.crash();
            let bytes = after.read(KEY, 0, 12288);
            // A prefix of the sectors is new, the rest old.
            let new = bytes.chunks(4096).take_while(|c| c[0] == 6).count();
            assert!(bytes
                .chunks(4096)
                .skip(new)
                .all(|c| c.iter().all(|b| *b == 5)));
        }
    }

    #[test]
    fn a_failed_sync_loses_its_writes_even_after_a_good_sync() {
        let p = SimPages::new(1);
        p.write(KEY, 0, &[5u8; 4096]);
        p.fail_next_syncs(1);
        assert!(p.sync(KEY).is_err());
        p.write(KEY, 4096, &[6u8; 4096]);
        p.sync(KEY).unwrap();
        assert_eq!(p.read(KEY, 0, 4096), vec![5u8; 4096], "read back");
        let after = p.crash();
        assert_eq!(after.read(KEY, 0, 4096), vec![0u8; 4096], "never durable");
        assert_eq!(after.read(KEY, 4096, 4096), vec![6u8; 4096]);
    }
}
