//! The page store: versions of each segment's pages, written by the coalescer and read by
//! `GetPage`, in one sparse `O_DIRECT` file per segment
//! (`shard-N/pages/v<volume>-pg<pg>.v2.pages`).
//! The slot format and the rules that make it crash-safe are in [`format`] and FORMAT.md §4;
//! what writes versions, and when records may leave the hot log, is in `pages.rs`.
//! [`PageStore::simulated`] keeps the files in memory instead ([`sim`]), where a power cut
//! loses or tears what was not synced, so simulations test that argument too.

pub mod cache;
pub mod format;
pub mod sim;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use hexad_client::{Lsn, PageNo, PAGE_BYTES};

use crate::hotlog::format::SegmentKey;
use cache::SlotCache;
use format::{Slot, SLOTS, SLOT_BYTES};

/// A page's two slots as read.
pub struct PageSlots {
    pub slots: [Slot; SLOTS],
    bytes: Vec<u8>,
}

impl PageSlots {
    /// The LSN slot `s`'s header claims, if its header is intact (see
    /// [`format::header_lsn`]).
    pub fn claimed_lsn(&self, key: SegmentKey, page: PageNo, s: usize) -> Option<Lsn> {
        let slot = &self.bytes[s * SLOT_BYTES..(s + 1) * SLOT_BYTES];
        format::header_lsn(key.volume, key.pg, page, slot)
    }

    /// The page bytes of slot `s` (valid slots only).
    pub fn data(&self, s: usize) -> [u8; PAGE_BYTES] {
        let slot = &self.bytes[s * SLOT_BYTES..(s + 1) * SLOT_BYTES];
        format::data(slot).try_into().expect("a page")
    }
}

pub struct PageStore {
    media: Media,
    /// Slots as the file holds them, for [`PageStore::read_cached`].
    cache: RefCell<SlotCache>,
}

/// Slots a simulated store caches: few, so that simulations evict as well as hit.
const SIMULATED_CACHE_SLOTS: usize = 16;

/// Where the page files live.
enum Media {
    /// `O_DIRECT` files in a directory, through glommio.
    Files {
        dir: PathBuf,
        files: RefCell<HashMap<SegmentKey, Rc<DmaFile>>>,
    },
    Simulated(sim::SimPages),
}

impl PageStore {
    /// The store under `dir` (created if missing).
    /// A file of the version-1 layout (named without `.v2`) is refused: this build reads
    /// only version 2.
    /// `cache_slots` bounds [`PageStore::read_cached`]'s memory (slots of [`SLOT_BYTES`]).
    pub fn open(dir: &Path, cache_slots: usize) -> io::Result<PageStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::other(format!("{}: {e}", dir.display())))?;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if is_old_format(&name) {
                return Err(io::Error::other(format!(
                    "{}: a page store file of format version 1, which this build does not read (FORMAT.md §4); it predates any release: remove the node's data directory",
                    dir.join(name).display()
                )));
            }
        }
        Ok(PageStore {
            media: Media::Files {
                dir: dir.to_path_buf(),
                files: RefCell::default(),
            },
            cache: RefCell::new(SlotCache::new(cache_slots)),
        })
    }

    /// An empty store in memory; `seed` decides what a power cut keeps.
    pub fn simulated(seed: u64) -> PageStore {
        PageStore {
            media: Media::Simulated(sim::SimPages::new(seed)),
            cache: RefCell::new(SlotCache::new(SIMULATED_CACHE_SLOTS)),
        }
    }

    /// Makes the next `n` syncs fail (simulated stores only; see `sim.rs`).
    pub fn fail_next_syncs(&self, n: u32) {
        match &self.media {
            Media::Simulated(pages) => pages.fail_next_syncs(n),
            Media::Files { .. } => panic!("only a simulated page store fails on demand"),
        }
    }

    /// A power cut (simulated stores only): the store as it comes back.
    #[must_use]
    pub fn crash(&self) -> PageStore {
        match &self.media {
            Media::Simulated(pages) => PageStore {
                media: Media::Simulated(pages.crash()),
                cache: RefCell::new(SlotCache::new(SIMULATED_CACHE_SLOTS)),
            },
            Media::Files { .. } => panic!("only a simulated page store can be crashed"),
        }
    }

    /// The segment's file, opened (and created, durably) on first use.
    async fn file(
        dir: &Path,
        files: &RefCell<HashMap<SegmentKey, Rc<DmaFile>>>,
        key: SegmentKey,
    ) -> io::Result<Rc<DmaFile>> {
        if let Some(f) = files.borrow().get(&key) {
            return Ok(f.clone());
        }
        let path = dir.join(file_name(key));
        let created = !path.exists();
        if created {
            // Created with plain I/O, not glommio: see `disk::glommio_disk` on probing.
            std::fs::File::create(&path)?.sync_all()?;
            std::fs::File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let file = Rc::new(file);
        files.borrow_mut().insert(key, file.clone());
        Ok(file)
    }

    /// Reads both slots of `page` from the disk, at once (a hole or past the end reads as
    /// empty), and refreshes the cache with them: damage found here is what the coalescer
    /// sees next.
    pub async fn read(&self, key: SegmentKey, page: PageNo) -> io::Result<PageSlots> {
        let offsets = [0, 1].map(|s| format::slot_offset(key.pg, page, s));
        let mut bytes = Vec::with_capacity(SLOTS * SLOT_BYTES);
        match &self.media {
            Media::Files { dir, files } => {
                let file = PageStore::file(dir, files, key).await?;
                let read = |at| file.read_at_aligned(at, SLOT_BYTES);
                let (a, b) = futures_lite::future::zip(read(offsets[0]), read(offsets[1])).await;
                for got in [a?, b?] {
                    let start = bytes.len();
                    bytes.extend_from_slice(&got);
                    bytes.resize(start + SLOT_BYTES, 0);
                }
            }
            Media::Simulated(pages) => {
                for at in offsets {
                    bytes.extend_from_slice(&pages.read(key, at, SLOT_BYTES));
                }
            }
        }
        let mut cache = self.cache.borrow_mut();
        for (s, at) in offsets.into_iter().enumerate() {
            cache.insert(key, at, bytes[s * SLOT_BYTES..(s + 1) * SLOT_BYTES].into());
        }
        Ok(PageStore::decode_slots(key, page, bytes))
    }

    /// Both slots of `page` as [`PageStore::read`] would read them, from the cache when it
    /// holds both (the coalescer's reads; `GetPage` reads the disk).
    pub async fn read_cached(&self, key: SegmentKey, page: PageNo) -> io::Result<PageSlots> {
        let offsets = [0, 1].map(|s| format::slot_offset(key.pg, page, s));
        let cached = {
            let cache = self.cache.borrow();
            offsets.map(|at| cache.get(key, at))
        };
        if let [Some(a), Some(b)] = cached {
            let mut bytes = Vec::with_capacity(SLOTS * SLOT_BYTES);
            bytes.extend_from_slice(&a);
            bytes.extend_from_slice(&b);
            return Ok(PageStore::decode_slots(key, page, bytes));
        }
        self.read(key, page).await
    }

    fn decode_slots(key: SegmentKey, page: PageNo, bytes: Vec<u8>) -> PageSlots {
        let slots = [0, 1].map(|s| {
            let slot = &bytes[s * SLOT_BYTES..(s + 1) * SLOT_BYTES];
            format::decode(key.volume, key.pg, page, slot)
        });
        PageSlots { slots, bytes }
    }

    /// Reads up to `count` extents ([`format::EXTENT_BYTES`] each) of the segment's file,
    /// the first at or after extent `from` and skipping holes (`SEEK_DATA`), all at once.
    /// Returns each extent's index and bytes (zero past the end of the file), and the
    /// extent to continue from: `None` once no data follows.
    pub async fn read_extents(
        &self,
        key: SegmentKey,
        from: u64,
        count: usize,
    ) -> io::Result<(Vec<(u64, Vec<u8>)>, Option<u64>)> {
        use std::os::fd::AsRawFd;
        let (dir, files) = match &self.media {
            Media::Files { dir, files } => (dir, files),
            Media::Simulated(pages) => return Ok(pages.read_extents(key, from, count)),
        };
        let file = PageStore::file(dir, files, key).await?;
        let extent_bytes = format::EXTENT_BYTES as u64;
        let mut found = Vec::new();
        let mut next = Some(from);
        while let Some(at) = next.filter(|_| found.len() < count) {
            let Ok(offset) = i64::try_from(at.saturating_mul(extent_bytes)) else {
                next = None;
                break;
            };
            match nix::unistd::lseek(file.as_raw_fd(), offset, nix::unistd::Whence::SeekData) {
                Ok(data) => {
                    let extent = u64::try_from(data).expect("an offset") / extent_bytes;
                    found.push(extent);
                    next = Some(extent + 1);
                }
                Err(nix::errno::Errno::ENXIO) => next = None,
                Err(e) => return Err(io::Error::other(format!("SEEK_DATA: {e}"))),
            }
        }
        let tasks: Vec<_> = found
            .iter()
            .map(|&extent| {
                let file = file.clone();
                glommio::spawn_local(async move {
                    let got = file
                        .read_at_aligned(extent * extent_bytes, format::EXTENT_BYTES)
                        .await?;
                    let mut bytes = got.to_vec();
                    bytes.resize(format::EXTENT_BYTES, 0);
                    Ok::<_, io::Error>((extent, bytes))
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await?);
        }
        Ok((out, next))
    }

    /// Writes encoded slots ([`format::encode`]) that sit back to back from offset `at`
    /// with one write (not yet durable: see [`PageStore::sync`]).
    pub async fn write_run(&self, key: SegmentKey, at: u64, slots: &[Vec<u8>]) -> io::Result<()> {
        let written = self.write_run_uncached(key, at, slots).await;
        let mut cache = self.cache.borrow_mut();
        for (i, slot) in slots.iter().enumerate() {
            let offset = at + (i * SLOT_BYTES) as u64;
            match &written {
                Ok(()) => cache.insert(key, offset, slot.as_slice().into()),
                Err(_) => cache.remove(key, offset),
            }
        }
        written
    }

    async fn write_run_uncached(
        &self,
        key: SegmentKey,
        at: u64,
        slots: &[Vec<u8>],
    ) -> io::Result<()> {
        let (dir, files) = match &self.media {
            Media::Files { dir, files } => (dir, files),
            Media::Simulated(pages) => {
                pages.write(key, at, &slots.concat());
                return Ok(());
            }
        };
        let file = PageStore::file(dir, files, key).await?;
        let len = slots.len() * SLOT_BYTES;
        let mut buf = file.alloc_dma_buffer(len);
        for (i, slot) in slots.iter().enumerate() {
            buf.as_bytes_mut()[i * SLOT_BYTES..(i + 1) * SLOT_BYTES].copy_from_slice(slot);
        }
        let n = file.write_at(buf, at).await?;
        if n != len {
            return Err(io::Error::other(format!(
                "short page write at {at}: {n} of {len} bytes"
            )));
        }
        Ok(())
    }

    /// Makes every completed write to the segment's file durable.
    pub async fn sync(&self, key: SegmentKey) -> io::Result<()> {
        match &self.media {
            Media::Files { dir, files } => {
                Ok(PageStore::file(dir, files, key).await?.fdatasync().await?)
            }
            Media::Simulated(pages) => pages.sync(key),
        }
    }
}

/// The name of a segment's page-store file.
pub fn file_name(key: SegmentKey) -> String {
    format!("v{}-pg{}.v2.pages", key.volume.0, key.pg.0)
}

/// Whether a file in the page-store directory is a version-1 page file.
fn is_old_format(name: &str) -> bool {
    let path = Path::new(name);
    path.extension().is_some_and(|e| e == "pages")
        && Path::new(path.file_stem().unwrap_or_default())
            .extension()
            .is_none_or(|e| e != "v2")
}
