//! Per-shard segment metadata that must outlive the hot log: each segment's highest volume
//! epoch (so a fenced writer stays fenced across restarts, even on a segment that holds no
//! record) and its truncation ranges (so annulled records stay annulled when the hot log is
//! scanned again). Layout in `FORMAT.md` ("Segment metadata file").
//!
//! Changes are rare (one per volume open per segment), so the whole file is rewritten each
//! time: write `segments.meta.tmp`, fsync it, rename it over `segments.meta`, fsync the
//! directory. A crash leaves either the old or the new file. This uses blocking std I/O on
//! the shard's thread: a few milliseconds per volume open, never on the append path.
//!
//! A save that fails leaves no trace: the store goes back to what the media last took, so
//! memory never claims an epoch or a range the file does not hold (found on a full disk:
//! a `Fence` whose save hit ENOSPC was refused, yet its epoch stayed in memory and refused
//! a later `Truncate` at the old epoch). The next save writes the whole file again from
//! memory, so nothing trusts a page cache that a failed fsync may have left dirty.
//!
//! Where the file lives is a [`MetaMedia`]: a directory for the real node, memory for
//! tests and simulations, which can make a save fail.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use hexad_client::membership::Membership;
use hexad_client::wire::codec::Reader;
use hexad_client::wire::Truncation;
use hexad_client::{Lsn, PgIndex, VolumeEpoch, VolumeId};

use crate::hotlog::format::SegmentKey;

const MAGIC: &[u8; 4] = b"HXSM";
/// Version 2 added each segment's coalesced floor, version 3 the volume-wide epochs,
/// version 4 each segment's membership; older files still load (floor 0, no volume
/// epochs, the placement default).
const VERSION: u16 = 4;
const FILE: &str = "segments.meta";
const TMP: &str = "segments.meta.tmp";
/// Most truncation ranges kept per segment: one per volume open that reached it.
pub const MAX_TRUNCATIONS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub volume_epoch: VolumeEpoch,
    pub truncations: Vec<Truncation>,
    /// Every record of the segment at or below this LSN is in a synced page version and
    /// may be gone from the hot log: the segment's SCL starts here after a restart.
    pub floor: Lsn,
    /// Who holds the PG, as the segment last learned it (DESIGN §8).
    pub membership: Membership,
}

impl Default for SegmentMeta {
    fn default() -> Self {
        SegmentMeta {
            volume_epoch: VolumeEpoch::default(),
            truncations: Vec::new(),
            floor: Lsn::NONE,
            membership: Membership::placement(),
        }
    }
}

/// Where a shard's metadata file is kept. `replace` is atomic: after a crash the media
/// holds either the old bytes or the new ones.
pub trait MetaMedia {
    /// The file's bytes; `None` if there is no file yet.
    fn read(&self) -> io::Result<Option<Vec<u8>>>;
    fn replace(&self, bytes: &[u8]) -> io::Result<()>;
    /// Names the file in errors.
    fn describe(&self) -> String;
}

/// `dir/segments.meta`, replaced by write, fsync, rename and directory fsync.
pub struct DirMedia {
    dir: PathBuf,
}

impl MetaMedia for DirMedia {
    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        let _ = std::fs::remove_file(self.dir.join(TMP));
        match std::fs::read(self.dir.join(FILE)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, bytes: &[u8]) -> io::Result<()> {
        let (tmp, path) = (self.dir.join(TMP), self.dir.join(FILE));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all())
    }

    fn describe(&self) -> String {
        self.dir.join(FILE).display().to_string()
    }
}

/// The file in memory, for tests and simulations: `fail_next(n, kind)` makes the next `n`
/// saves fail as a full or broken disk would.
#[derive(Default)]
pub struct MemMedia {
    bytes: RefCell<Option<Vec<u8>>>,
    failures: Cell<u32>,
    failure: Cell<Option<io::ErrorKind>>,
    saves: Cell<u64>,
}

impl MemMedia {
    /// A file that already holds `bytes` (as a restart, or a fuzzer, finds it).
    pub fn holding(bytes: Vec<u8>) -> MemMedia {
        MemMedia {
            bytes: RefCell::new(Some(bytes)),
            ..MemMedia::default()
        }
    }

    pub fn fail_next(&self, saves: u32, kind: io::ErrorKind) {
        self.failures.set(saves);
        self.failure.set(Some(kind));
    }

    /// Saves that reached the media.
    pub fn saves(&self) -> u64 {
        self.saves.get()
    }
}

impl MetaMedia for MemMedia {
    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.bytes.borrow().clone())
    }

    fn replace(&self, bytes: &[u8]) -> io::Result<()> {
        if self.failures.get() > 0 {
            self.failures.set(self.failures.get() - 1);
            let kind = self.failure.get().unwrap_or(io::ErrorKind::Other);
            return Err(io::Error::new(kind, "injected metadata save failure"));
        }
        *self.bytes.borrow_mut() = Some(bytes.to_vec());
        self.saves.set(self.saves.get() + 1);
        Ok(())
    }

    fn describe(&self) -> String {
        "segments.meta (in memory)".into()
    }
}

/// The metadata of every segment of a shard.
pub struct MetaStore {
    media: Rc<dyn MetaMedia>,
    pub segments: BTreeMap<SegmentKey, SegmentMeta>,
    /// Per volume, the epoch every segment of it on this shard refuses to go below, held
    /// or created later (`Fence` mode `Volume`).
    pub volumes: BTreeMap<VolumeId, VolumeEpoch>,
    /// What the media holds: a failed save puts `segments` and `volumes` back to this.
    durable: (BTreeMap<SegmentKey, SegmentMeta>, Volumes),
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("media", &self.media.describe())
            .field("segments", &self.segments)
            .field("volumes", &self.volumes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({detail}); it holds volume epochs and truncation ranges, so the shard will not start without it: restore it or rebuild this node's segments from peers")]
    Corrupt { path: String, detail: String },
}

impl MetaStore {
    /// An empty store kept in memory only.
    pub fn in_memory() -> MetaStore {
        MetaStore::open(Rc::new(MemMedia::default())).expect("an empty in-memory store loads")
    }

    /// Loads `dir/segments.meta`; a missing file is an empty store.
    pub fn load(dir: &Path) -> Result<MetaStore, MetaError> {
        MetaStore::open(Rc::new(DirMedia {
            dir: dir.to_path_buf(),
        }))
    }

    /// Loads the store `media` holds; no file is an empty store.
    pub fn open(media: Rc<dyn MetaMedia>) -> Result<MetaStore, MetaError> {
        let path = media.describe();
        let (segments, volumes) = match media.read() {
            Ok(Some(bytes)) => {
                decode(&bytes).map_err(|detail| MetaError::Corrupt { path, detail })?
            }
            Ok(None) => Default::default(),
            Err(source) => return Err(MetaError::Io { path, source }),
        };
        Ok(MetaStore {
            media,
            durable: (segments.clone(), volumes.clone()),
            segments,
            volumes,
        })
    }

    /// Makes the current contents durable (see the module comment). On failure the store
    /// is as the media holds it: every change since the last good save is undone.
    pub fn save(&mut self) -> Result<(), MetaError> {
        let bytes = encode(&self.segments, &self.volumes);
        match self.media.replace(&bytes) {
            Ok(()) => {
                self.durable = (self.segments.clone(), self.volumes.clone());
                Ok(())
            }
            Err(source) => {
                let (segments, volumes) = self.durable.clone();
                self.segments = segments;
                self.volumes = volumes;
                Err(MetaError::Io {
                    path: self.media.describe(),
                    source,
                })
            }
        }
    }
}

/// Volume epochs of a shard, as kept in the file.
type Volumes = BTreeMap<VolumeId, VolumeEpoch>;

fn encode(segments: &BTreeMap<SegmentKey, SegmentMeta>, volumes: &Volumes) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(MAGIC);
    b.put_u16_le(VERSION);
    b.put_u16_le(0);
    b.put_u32_le(segments.len() as u32);
    b.put_u32_le(0);
    for (key, meta) in segments {
        b.put_u64_le(key.volume.0);
        b.put_u32_le(key.pg.0);
        b.put_u32_le(meta.truncations.len() as u32);
        b.put_u64_le(meta.volume_epoch.0);
        b.put_u64_le(meta.floor.0);
        meta.membership.encode(&mut b);
        for t in &meta.truncations {
            t.encode(&mut b);
        }
    }
    b.put_u32_le(volumes.len() as u32);
    for (volume, epoch) in volumes {
        b.put_u64_le(volume.0);
        b.put_u64_le(epoch.0);
    }
    let crc = crc32c::crc32c(&b);
    b.put_u32_le(crc);
    b.freeze()
}

fn decode(bytes: &[u8]) -> Result<(BTreeMap<SegmentKey, SegmentMeta>, Volumes), String> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(format!("{} bytes is too short", bytes.len()));
    };
    let stored = u32::from_le_bytes(bytes[body_len..].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&bytes[..body_len]);
    if stored != actual {
        return Err(format!(
            "CRC32C {actual:#010x} does not match the stored {stored:#010x}"
        ));
    }
    let mut r = Reader::new(Bytes::copy_from_slice(&bytes[..body_len]), "segments.meta");
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let magic = r.bytes(4).map_err(|x| e(&x))?;
    if &magic[..] != MAGIC {
        return Err(format!("bad magic {magic:?}"));
    }
    let version = r.u16().map_err(|x| e(&x))?;
    if !(1..=VERSION).contains(&version) {
        return Err(format!("version {version}; this build reads 1..={VERSION}"));
    }
    r.zeros(2).map_err(|x| e(&x))?;
    let count = r.u32().map_err(|x| e(&x))?;
    r.zeros(4).map_err(|x| e(&x))?;
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let key = SegmentKey {
            volume: VolumeId(r.u64().map_err(|x| e(&x))?),
            pg: PgIndex(r.u32().map_err(|x| e(&x))?),
        };
        let n = r.u32().map_err(|x| e(&x))? as usize;
        if n > MAX_TRUNCATIONS {
            return Err(format!("{n} truncation ranges for one segment"));
        }
        let volume_epoch = VolumeEpoch(r.u64().map_err(|x| e(&x))?);
        let floor = if version >= 2 {
            Lsn(r.u64().map_err(|x| e(&x))?)
        } else {
            Lsn::NONE
        };
        let membership = if version >= 4 {
            Membership::decode(&mut r).map_err(|x| e(&x))?
        } else {
            Membership::placement()
        };
        let truncations = (0..n)
            .map(|_| Truncation::decode(&mut r).map_err(|x| e(&x)))
            .collect::<Result<_, _>>()?;
        out.insert(
            key,
            SegmentMeta {
                volume_epoch,
                truncations,
                floor,
                membership,
            },
        );
    }
    let mut volumes = Volumes::new();
    if version >= 3 {
        for _ in 0..r.u32().map_err(|x| e(&x))? {
            let volume = VolumeId(r.u64().map_err(|x| e(&x))?);
            volumes.insert(volume, VolumeEpoch(r.u64().map_err(|x| e(&x))?));
        }
    }
    r.finish().map_err(|x| e(&x))?;
    Ok((out, volumes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<SegmentKey, SegmentMeta> {
        let mut m = BTreeMap::new();
        m.insert(
            SegmentKey {
                volume: VolumeId(7),
                pg: PgIndex(3),
            },
            SegmentMeta {
                volume_epoch: VolumeEpoch(4),
                truncations: vec![Truncation {
                    epoch: VolumeEpoch(4),
                    start: Lsn(100),
                    end: Lsn(200),
                    sealed: true,
                }],
                floor: Lsn(90),
                membership: Membership {
                    epoch: hexad_client::MembershipEpoch(3),
                    members: hexad_client::membership::Members::Transitional {
                        old: [1, 2, 3, 4, 5, 6].map(hexad_client::NodeId),
                        new: [1, 2, 3, 4, 5, 7].map(hexad_client::NodeId),
                    },
                },
            },
        );
        m
    }

    #[test]
    fn round_trips_through_a_file_and_survives_a_leftover_tmp() {
        let dir = std::env::temp_dir().join(format!("hexad-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = MetaStore::load(&dir).unwrap();
        assert!(store.segments.is_empty());
        store.segments = sample();
        store.volumes.insert(VolumeId(7), VolumeEpoch(5));
        store.save().unwrap();
        std::fs::write(dir.join(TMP), b"half-written").unwrap();
        let again = MetaStore::load(&dir).unwrap();
        assert_eq!(again.segments, sample());
        assert_eq!(again.volumes, store.volumes);
        assert!(!dir.join(TMP).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_file_loads_with_floor_zero() {
        let mut v1 = sample();
        for m in v1.values_mut() {
            m.floor = Lsn::NONE;
            m.membership = Membership::placement();
        }
        // Version 1: the same layout without the floor word.
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u16_le(1);
        b.put_u16_le(0);
        b.put_u32_le(1);
        b.put_u32_le(0);
        for (key, meta) in &v1 {
            b.put_u64_le(key.volume.0);
            b.put_u32_le(key.pg.0);
            b.put_u32_le(meta.truncations.len() as u32);
            b.put_u64_le(meta.volume_epoch.0);
            for t in &meta.truncations {
                t.encode(&mut b);
            }
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        assert_eq!(decode(&b).unwrap(), (v1, Volumes::new()));
    }

    #[test]
    fn a_version_3_file_loads_with_the_placement_default() {
        let mut v3 = sample();
        for m in v3.values_mut() {
            m.membership = Membership::placement();
        }
        let volumes = Volumes::from([(VolumeId(7), VolumeEpoch(5))]);
        // Version 3: version 4's layout without the membership.
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u16_le(3);
        b.put_u16_le(0);
        b.put_u32_le(1);
        b.put_u32_le(0);
        for (key, meta) in &v3 {
            b.put_u64_le(key.volume.0);
            b.put_u32_le(key.pg.0);
            b.put_u32_le(meta.truncations.len() as u32);
            b.put_u64_le(meta.volume_epoch.0);
            b.put_u64_le(meta.floor.0);
            for t in &meta.truncations {
                t.encode(&mut b);
            }
        }
        b.put_u32_le(1);
        b.put_u64_le(7);
        b.put_u64_le(5);
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        assert_eq!(decode(&b).unwrap(), (v3, volumes));
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let volumes = Volumes::from([(VolumeId(7), VolumeEpoch(5))]);
        let bytes = encode(&sample(), &volumes);
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(decode(&bytes).unwrap(), (sample(), volumes));
    }
}
