//! An in-memory disk for tests: reads see every completed write (like a page cache), but
//! only synced writes survive [`SimDisk::crash`]; unsynced ones are dropped, kept, or torn
//! at a 4 KiB sector boundary, chosen by a seeded generator.

use std::cell::RefCell;
use std::io;

use super::Disk;

const SECTOR_BYTES: usize = 4096;

/// A tiny deterministic generator (xorshift64*), so a seed reproduces a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

struct State {
    durable: Vec<Vec<u8>>,
    /// Completed but unsynced writes per file, in order.
    pending: Vec<Vec<(u64, Vec<u8>)>>,
    rng: Rng,
    /// Set on the old image by `crash`: it takes no more I/O.
    crashed: bool,
    /// Syncs still to fail (`fail_next_syncs`).
    failing_syncs: u32,
    /// Writes a failed sync left behind per file: read back, never durable.
    lost: Vec<Vec<(u64, Vec<u8>)>>,
}

pub struct SimDisk {
    state: RefCell<State>,
    file_bytes: u64,
}

impl SimDisk {
    pub fn new(files: u32, file_bytes: u64, seed: u64) -> SimDisk {
        SimDisk {
            state: RefCell::new(State {
                durable: vec![vec![0; file_bytes as usize]; files as usize],
                pending: vec![Vec::new(); files as usize],
                rng: Rng::new(seed),
                crashed: false,
                failing_syncs: 0,
                lost: vec![Vec::new(); files as usize],
            }),
            file_bytes,
        }
    }

    /// A power cut: returns the disk as it would come back. Each unsynced write is lost,
    /// kept, or torn (a random prefix of its sectors reaches the media).
    #[must_use]
    pub fn crash(&self) -> SimDisk {
        let mut s = self.state.borrow_mut();
        let mut durable = s.durable.clone();
        let files = s.durable.len();
        let pending = std::mem::replace(&mut s.pending, vec![Vec::new(); files]);
        s.crashed = true;
        for (file, writes) in pending.iter().enumerate() {
            for (offset, data) in writes {
                let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                let keep = match s.rng.below(3) {
                    0 => 0,
                    1 => sectors,
                    _ => s.rng.below(sectors + 1),
                };
                let keep_bytes = (keep as usize * SECTOR_BYTES).min(data.len());
                let at = *offset as usize;
                durable[file][at..at + keep_bytes].copy_from_slice(&data[..keep_bytes]);
            }
        }
        let seed = s.rng.next_u64();
        SimDisk {
            state: RefCell::new(State {
                durable,
                pending: vec![Vec::new(); files],
                rng: Rng::new(seed),
                crashed: false,
                failing_syncs: 0,
                lost: vec![Vec::new(); files],
            }),
            file_bytes: self.file_bytes,
        }
    }

    /// The next `n` syncs fail as Linux fails an `fsync`: the writes they should have made
    /// durable stay readable but never reach the media (a later good sync leaves them
    /// out), and a power cut loses them.
    pub fn fail_next_syncs(&self, n: u32) {
        self.state.borrow_mut().failing_syncs = n;
    }

    /// Flips bits in place in the durable image (bit rot).
    pub fn corrupt(&self, file: u32, offset: u64, bytes: usize) {
        let mut s = self.state.borrow_mut();
        for b in &mut s.durable[file as usize][offset as usize..offset as usize + bytes] {
            *b ^= 0x5a;
        }
    }

    /// Bit rot in written data: flips 64 bytes of the `pick`-th (modulo their number)
    /// sector of the durable image that holds anything but zeros. Returns where, or `None`
    /// if nothing is written yet.
    pub fn rot_written_sector(&self, pick: u64) -> Option<(u32, u64)> {
        let written: Vec<(u32, u64)> = {
            let s = self.state.borrow();
            s.durable
                .iter()
                .enumerate()
                .flat_map(|(f, data)| {
                    data.chunks(SECTOR_BYTES)
                        .enumerate()
                        .filter(|(_, sector)| sector.iter().any(|b| *b != 0))
                        .map(move |(i, _)| (f as u32, (i * SECTOR_BYTES) as u64))
                })
                .collect()
        };
        if written.is_empty() {
            return None;
        }
        let at = written[(pick % written.len() as u64) as usize];
        self.corrupt(at.0, at.1, 64);
        Some(at)
    }

    /// Yields a random number of times, so concurrent writes complete out of order and
    /// other tasks run between a write and its sync, as on a real device; one I/O in 64
    /// is a latency spike (up to 200 yields), long enough for whole requests to overtake it.
    async fn latency(&self) {
        let yields = {
            let rng = &mut self.state.borrow_mut().rng;
            if rng.below(64) == 0 {
                20 + rng.below(180)
            } else {
                rng.below(6)
            }
        };
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
    }

    fn view(&self, file: u32) -> Vec<u8> {
        let s = self.state.borrow();
        let mut data = s.durable[file as usize].clone();
        for (offset, w) in s.lost[file as usize]
            .iter()
            .chain(&s.pending[file as usize])
        {
            data[*offset as usize..*offset as usize + w.len()].copy_from_slice(w);
        }
        data
    }
}

impl Disk for SimDisk {
    type Buf = Vec<u8>;
    type ReadBuf = Vec<u8>;

    fn alloc(&self, bytes: usize) -> Vec<u8> {
        vec![0; bytes]
    }

    fn file_count(&self) -> u32 {
        self.state.borrow().durable.len() as u32
    }

    fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    async fn read_at(&self, file: u32, offset: u64, bytes: usize) -> io::Result<Vec<u8>> {
        let data = self.view(file);
        let end = (offset as usize + bytes).min(data.len());
        Ok(data[offset as usize..end].to_vec())
    }

    async fn write_at(
        &self,
        file: u32,
        offset: u64,
        mut buf: Vec<u8>,
        bytes: usize,
    ) -> io::Result<()> {
        assert!(
            (offset as usize).is_multiple_of(SECTOR_BYTES) && bytes.is_multiple_of(SECTOR_BYTES),
            "unaligned write"
        );
        assert!(
            offset + bytes as u64 <= self.file_bytes,
            "write past the end of the file"
        );
        buf.truncate(bytes);
        self.latency().await;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(io::Error::other("simulated disk lost power"));
        }
        s.pending[file as usize].push((offset, buf));
        Ok(())
    }

    async fn sync(&self, file: u32) -> io::Result<()> {
        self.latency().await;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(io::Error::other("simulated disk lost power"));
        }
        let writes = std::mem::take(&mut s.pending[file as usize]);
        if s.failing_syncs > 0 {
            s.failing_syncs -= 1;
            s.lost[file as usize].extend(writes);
            return Err(io::Error::other("simulated fsync failure"));
        }
        for (offset, w) in writes {
            s.durable[file as usize][offset as usize..offset as usize + w.len()]
                .copy_from_slice(&w);
        }
        Ok(())
    }
}
