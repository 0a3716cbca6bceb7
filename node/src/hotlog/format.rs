//! Hot-log block format: a 64-byte header followed by entries, padded to 4 KiB.
//!
//! ```text
//!  block header (64 bytes, little-endian)
//!  0      4    6     8            16     24            32              40        48        56         60
//!  +------+----+-----+------------+------+-------------+---------------+---------+---------+----------+-------+
//!  |magic |ver |flags| generation | seq  | durable_seq | log_start_seq | min_lsn | max_lsn |used_bytes| crc32c|
//!  |"HXLB"|u16 |u16=0| u64        | u64  | u64         | u64           | u64     | u64     | u32      | u32   |
//!  +------+----+-----+------------+------+-------------+---------------+---------+---------+----------+-------+
//!  entry (32-byte header, then the record exactly as on the wire)
//!  0        8              16                 24    28            32
//!  +--------+--------------+------------------+-----+-------------+----------------
//!  | volume | volume_epoch | membership_epoch | pg  | record_bytes| record ...
//!  +--------+--------------+------------------+-----+-------------+----------------
//! ```
//! `crc32c` covers header bytes 0..60 and the body up to `used_bytes`. The block occupies
//! `used_bytes` rounded up to [`BLOCK_ALIGN`]; the padding is zero. See `FORMAT.md`.

use bytes::Bytes;
use hexad_client::wire::codec::Reader;
use hexad_client::wire::Record;
use hexad_client::{Lsn, MembershipEpoch, PgIndex, VolumeEpoch, VolumeId};

pub const BLOCK_MAGIC: [u8; 4] = *b"HXLB";
pub const BLOCK_FORMAT_VERSION: u16 = 1;
pub const BLOCK_HEADER_BYTES: usize = 64;
pub const ENTRY_HEADER_BYTES: usize = 32;
/// Every block starts on, and is padded to, this boundary (the device's logical block size).
pub const BLOCK_ALIGN: usize = 4096;

/// A segment: one replica of one protection group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    pub volume: VolumeId,
    pub pg: PgIndex,
}

/// Where a record's bytes sit in the hot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    pub file: u32,
    /// Byte offset of the record (not the entry header) within the file.
    pub offset: u64,
    pub bytes: u32,
}

/// The parsed header of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub generation: u64,
    pub seq: u64,
    pub durable_seq: u64,
    pub log_start_seq: u64,
    pub min_lsn: Lsn,
    pub max_lsn: Lsn,
    pub used_bytes: u32,
}

impl BlockHeader {
    /// Bytes the block occupies on disk.
    pub fn span_bytes(&self) -> usize {
        align_up(self.used_bytes as usize)
    }
}

pub fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN
}

/// One entry to be logged: a record with the segment and epochs it arrived with.
#[derive(Debug, Clone)]
pub struct Entry {
    pub segment: SegmentKey,
    pub volume_epoch: VolumeEpoch,
    pub membership_epoch: MembershipEpoch,
    pub record: Record,
}

impl Entry {
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_BYTES + self.record.encoded_len()
    }
}

/// Builds a block in a caller-provided buffer (the DMA buffer), copying each record once.
pub struct BlockBuilder<'a> {
    buf: &'a mut [u8],
    used: usize,
    min_lsn: u64,
    max_lsn: u64,
}

impl<'a> BlockBuilder<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        assert!(buf.len() >= BLOCK_ALIGN && buf.len().is_multiple_of(BLOCK_ALIGN));
        BlockBuilder {
            buf,
            used: BLOCK_HEADER_BYTES,
            min_lsn: u64::MAX,
            max_lsn: 0,
        }
    }

    /// Whether `entry` still fits.
    pub fn fits(&self, entry: &Entry) -> bool {
        self.used + entry.encoded_len() <= self.buf.len()
    }

    /// Copies `entry` in and returns the record's offset within the block.
    pub fn push(&mut self, entry: &Entry) -> usize {
        assert!(self.fits(entry));
        let raw = entry.record.raw();
        let at = self.used;
        let h = &mut self.buf[at..at + ENTRY_HEADER_BYTES];
        h[0..8].copy_from_slice(&entry.segment.volume.0.to_le_bytes());
        h[8..16].copy_from_slice(&entry.volume_epoch.0.to_le_bytes());
        h[16..24].copy_from_slice(&entry.membership_epoch.0.to_le_bytes());
        h[24..28].copy_from_slice(&entry.segment.pg.0.to_le_bytes());
        h[28..32].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        let rec_at = at + ENTRY_HEADER_BYTES;
        self.buf[rec_at..rec_at + raw.len()].copy_from_slice(raw);
        self.used = rec_at + raw.len();
        self.min_lsn = self.min_lsn.min(entry.record.lsn.0);
        self.max_lsn = self.max_lsn.max(entry.record.lsn.0);
        rec_at
    }

    pub fn is_empty(&self) -> bool {
        self.used == BLOCK_HEADER_BYTES
    }

    /// Bytes used so far, header included.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Writes the header and zero padding; returns the header and the bytes to write.
    pub fn finish(
        self,
        generation: u64,
        seq: u64,
        durable_seq: u64,
        log_start_seq: u64,
    ) -> (BlockHeader, usize) {
        assert!(
            durable_seq < seq && log_start_seq <= seq,
            "block sequence invariants"
        );
        let span = align_up(self.used);
        self.buf[self.used..span].fill(0);
        let header = BlockHeader {
            generation,
            seq,
            durable_seq,
            log_start_seq,
            min_lsn: Lsn(if self.max_lsn == 0 { 0 } else { self.min_lsn }),
            max_lsn: Lsn(self.max_lsn),
            used_bytes: self.used as u32,
        };
        let h = &mut self.buf[..BLOCK_HEADER_BYTES];
        h[0..4].copy_from_slice(&BLOCK_MAGIC);
        h[4..6].copy_from_slice(&BLOCK_FORMAT_VERSION.to_le_bytes());
        h[6..8].copy_from_slice(&0u16.to_le_bytes());
        h[8..16].copy_from_slice(&generation.to_le_bytes());
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        h[24..32].copy_from_slice(&durable_seq.to_le_bytes());
        h[32..40].copy_from_slice(&log_start_seq.to_le_bytes());
        h[40..48].copy_from_slice(&header.min_lsn.0.to_le_bytes());
        h[48..56].copy_from_slice(&header.max_lsn.0.to_le_bytes());
        h[56..60].copy_from_slice(&header.used_bytes.to_le_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&self.buf[..60]),
            &self.buf[BLOCK_HEADER_BYTES..self.used],
        );
        self.buf[60..64].copy_from_slice(&crc.to_le_bytes());
        // Pair assertion: what goes to disk must read back as the same block.
        debug_assert_eq!(parse_block(&self.buf[..span]).map(|(h, _)| h), Some(header));
        (header, span)
    }
}

/// An entry read back from a block: its segment, epochs and record.
#[derive(Debug, Clone)]
pub struct ScannedEntry {
    pub segment: SegmentKey,
    pub volume_epoch: VolumeEpoch,
    pub membership_epoch: MembershipEpoch,
    pub record: Record,
    /// Offset of the record within the block.
    pub record_offset: usize,
}

/// Parses the block at the start of `buf` if it is complete and intact: magic, version,
/// length and CRC, and every entry decodes. Returns `None` for anything else (zeros, a torn
/// or stale write, garbage).
pub fn parse_block(buf: &[u8]) -> Option<(BlockHeader, Vec<ScannedEntry>)> {
    let header = parse_header(buf)?;
    let body = Bytes::copy_from_slice(&buf[BLOCK_HEADER_BYTES..header.used_bytes as usize]);
    let mut r = Reader::new(body, "hot-log entry");
    let mut entries = Vec::new();
    let mut at = BLOCK_HEADER_BYTES;
    while r.remaining() > 0 {
        let volume = VolumeId(r.u64().ok()?);
        let volume_epoch = VolumeEpoch(r.u64().ok()?);
        let membership_epoch = MembershipEpoch(r.u64().ok()?);
        let pg = PgIndex(r.u32().ok()?);
        let record_bytes = r.u32().ok()? as usize;
        let before = r.remaining();
        let record = Record::decode(&mut r).ok()?;
        if before - r.remaining() != record_bytes {
            return None;
        }
        entries.push(ScannedEntry {
            segment: SegmentKey { volume, pg },
            volume_epoch,
            membership_epoch,
            record,
            record_offset: at + ENTRY_HEADER_BYTES,
        });
        at += ENTRY_HEADER_BYTES + record_bytes;
    }
    Some((header, entries))
}

/// Parses and CRC-checks just the header (the CRC covers the body too).
pub fn parse_header(buf: &[u8]) -> Option<BlockHeader> {
    if buf.len() < BLOCK_HEADER_BYTES || buf[0..4] != BLOCK_MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    let flags = u16::from_le_bytes([buf[6], buf[7]]);
    let used_bytes = u32_at(56);
    if version != BLOCK_FORMAT_VERSION
        || flags != 0
        || (used_bytes as usize) < BLOCK_HEADER_BYTES
        || used_bytes as usize > buf.len()
    {
        return None;
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&buf[..60]),
        &buf[BLOCK_HEADER_BYTES..used_bytes as usize],
    );
    if crc != u32_at(60) {
        return None;
    }
    Some(BlockHeader {
        generation: u64_at(8),
        seq: u64_at(16),
        durable_seq: u64_at(24),
        log_start_seq: u64_at(32),
        min_lsn: Lsn(u64_at(40)),
        max_lsn: Lsn(u64_at(48)),
        used_bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hexad_client::wire::Op;
    use hexad_client::PageNo;

    pub(crate) fn entry(volume: u64, pg: u32, lsn: u64, prev: u64) -> Entry {
        let page = PgIndex(pg).first_page().0 + lsn % 7;
        let mut payload = 8u32.to_le_bytes().to_vec();
        payload.extend(lsn.to_le_bytes());
        Entry {
            segment: SegmentKey {
                volume: VolumeId(volume),
                pg: PgIndex(pg),
            },
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            record: Record::new(
                Lsn(lsn),
                Lsn(prev),
                Lsn(0),
                PageNo(page),
                Op::WriteBytes,
                lsn.is_multiple_of(3),
                &payload,
            ),
        }
    }

    #[test]
    fn block_round_trip_and_any_flip_detected() {
        let mut buf = vec![0u8; 3 * BLOCK_ALIGN];
        let mut b = BlockBuilder::new(&mut buf);
        for lsn in 1..=60 {
            b.push(&entry(1, 0, lsn, lsn - 1));
        }
        let (header, span) = b.finish(3, 9, 7, 1);
        assert_eq!(
            header.used_bytes as usize,
            BLOCK_HEADER_BYTES + 60 * (ENTRY_HEADER_BYTES + 48 + 12)
        );
        assert_eq!(span, BLOCK_ALIGN * 2);
        let (back, entries) = parse_block(&buf[..span]).unwrap();
        assert_eq!(back, header);
        assert_eq!(entries.len(), 60);
        assert_eq!((header.min_lsn, header.max_lsn), (Lsn(1), Lsn(60)));
        let first = &entries[0];
        let raw = first.record.raw();
        assert_eq!(
            &buf[first.record_offset..first.record_offset + raw.len()],
            &raw[..]
        );
        for i in (0..header.used_bytes as usize).step_by(37) {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(
                parse_block(&bad[..span]).is_none(),
                "flip at {i} undetected"
            );
        }
        assert!(parse_block(&vec![0u8; BLOCK_ALIGN]).is_none());
    }
}

/// The checked-in block of format version 1 must keep parsing to the same contents.
/// Regenerate (only for a new version, as a new file) with `HEXAD_WRITE_FIXTURES=1`.
#[cfg(test)]
mod fixture {
    use super::tests::entry;
    use super::*;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hotlog-block-v1.bin");

    #[test]
    fn version_1_block_still_parses() {
        if std::env::var_os("HEXAD_WRITE_FIXTURES").is_some() {
            let mut buf = vec![0u8; BLOCK_ALIGN];
            let mut b = BlockBuilder::new(&mut buf);
            for lsn in 1..=3 {
                b.push(&entry(5, 1, lsn, lsn - 1));
            }
            let (_, span) = b.finish(2, 7, 6, 1);
            std::fs::write(PATH, &buf[..span]).unwrap();
        }
        let bytes = std::fs::read(PATH).expect("fixture present");
        let (h, entries) = parse_block(&bytes).expect("fixture parses");
        assert_eq!(
            (h.generation, h.seq, h.durable_seq, h.log_start_seq),
            (2, 7, 6, 1)
        );
        assert_eq!((h.min_lsn, h.max_lsn), (Lsn(1), Lsn(3)));
        let lsns: Vec<u64> = entries.iter().map(|e| e.record.lsn.0).collect();
        assert_eq!(lsns, vec![1, 2, 3]);
        for (e, lsn) in entries.iter().zip(1..) {
            assert_eq!(
                e.segment,
                SegmentKey {
                    volume: VolumeId(5),
                    pg: PgIndex(1)
                }
            );
            assert_eq!(e.record.raw(), entry(5, 1, lsn, lsn - 1).record.raw());
        }
    }
}
