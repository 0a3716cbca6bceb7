//! Bodies of the node-to-node repair messages (issue #6, FORMAT.md §1): a segment rebuild's
//! page baseline (`GetBaseline` / `Baseline`) and per-segment state (`GetSegmentStats` /
//! `SegmentStats`), which both operators and a node looking for segments it should hold
//! read. Kept apart from `mod.rs`, which only dispatches to them.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Message, MessageError, Truncation};
use crate::types::{Lsn, MembershipEpoch, PageNo, PgIndex, VolumeEpoch, VolumeId, PAGE_BYTES};
use crate::wire::codec::{DecodeError, Reader};

/// `Baseline.next_extent` once the segment's page file has been read to its end.
pub const BASELINE_DONE: u64 = u64::MAX;
/// Most page versions in one `Baseline` reply (8 MiB frames).
pub const MAX_BASELINE_PAGES: usize = 512;
/// Most truncation ranges in one `Baseline` reply (a segment keeps up to 4096).
pub const MAX_TRUNCATIONS: usize = 4096;
/// Most segments in one `SegmentStats` reply.
pub const MAX_SEGMENT_STATS: usize = 65_536;

/// One page version of a baseline, with a CRC32C over its page number, page LSN and bytes,
/// computed by the sender from a version that passed the page store's own check, so that
/// corruption anywhere after that (memory, the wire, a bug) is caught by the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselinePage {
    pub page: PageNo,
    pub lsn: Lsn,
    pub crc: u32,
    pub data: Bytes,
}

impl BaselinePage {
    /// A version with its checksum.
    pub fn new(page: PageNo, lsn: Lsn, data: Bytes) -> BaselinePage {
        assert_eq!(data.len(), PAGE_BYTES);
        BaselinePage {
            page,
            lsn,
            crc: Self::checksum(page, lsn, &data),
            data,
        }
    }

    pub fn checksum(page: PageNo, lsn: Lsn, data: &[u8]) -> u32 {
        let head = [page.0.to_le_bytes(), lsn.0.to_le_bytes()].concat();
        crc32c::crc32c_append(crc32c::crc32c(&head), data)
    }

    /// Whether the bytes still match the sender's checksum.
    pub fn intact(&self) -> bool {
        self.data.len() == PAGE_BYTES && Self::checksum(self.page, self.lsn, &self.data) == self.crc
    }
}

/// What a segment is doing about a rebuild (`SegmentStat.rebuild`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum RebuildPhase {
    /// Not rebuilding (never, or finished).
    #[default]
    None = 0,
    /// Copying a page baseline from a peer; reads are refused.
    Copying = 1,
    /// Baseline stored; pulling the records above it; reads are refused until done.
    CatchingUp = 2,
}

/// One segment as `SegmentStats` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStat {
    pub volume: VolumeId,
    pub pg: PgIndex,
    pub scl: Lsn,
    /// Records at or below it are in page versions only.
    pub floor: Lsn,
    pub highest_lsn: Lsn,
    /// Records held in memory.
    pub records: u64,
    /// Known gaps in the PG's backlink chain above the SCL.
    pub holes: u32,
    pub rebuild: RebuildPhase,
    pub volume_epoch: VolumeEpoch,
    pub membership_epoch: MembershipEpoch,
    /// Records and bytes gossip pulled into this segment since the node started.
    pub gossip_records: u64,
    pub gossip_bytes: u64,
    /// Page versions and bytes copied by rebuilds since the node started.
    pub rebuild_pages: u64,
    pub rebuild_bytes: u64,
}

const STAT_BYTES: usize = 104;

/// Encodes the body of one of this module's messages.
pub(super) fn encode(m: &Message, b: &mut BytesMut) {
    match m {
        Message::GetBaseline {
            volume,
            pg,
            membership_epoch,
            pin,
            from_extent,
            max_bytes,
        } => {
            b.put_u64_le(volume.0);
            b.put_u32_le(pg.0);
            b.put_u32_le(*max_bytes);
            b.put_u64_le(membership_epoch.0);
            b.put_u64_le(pin.0);
            b.put_u64_le(*from_extent);
        }
        Message::Baseline {
            volume,
            pg,
            floor,
            volume_epoch,
            next_extent,
            truncations,
            pages,
        } => {
            assert!(pages.len() <= MAX_BASELINE_PAGES && truncations.len() <= MAX_TRUNCATIONS);
            b.put_u64_le(volume.0);
            b.put_u32_le(pg.0);
            b.put_u16_le(pages.len() as u16);
            b.put_u16_le(truncations.len() as u16);
            b.put_u64_le(floor.0);
            b.put_u64_le(volume_epoch.0);
            b.put_u64_le(*next_extent);
            for t in truncations {
                t.encode(b);
            }
            for p in pages {
                b.put_u64_le(p.page.0);
                b.put_u64_le(p.lsn.0);
                b.put_u32_le(p.crc);
                b.put_u32_le(0);
                b.put_slice(&p.data);
            }
        }
        Message::GetSegmentStats => {}
        Message::SegmentStats { segments } => encode_segment_stats(b, segments),
        other => unreachable!("{} is not a repair message", other.kind()),
    }
}

/// Decodes the body of one of this module's messages.
pub(super) fn decode(kind: u16, r: &mut Reader) -> Result<Message, MessageError> {
    Ok(match kind {
        super::kind::GET_BASELINE => {
            let volume = VolumeId(r.u64()?);
            let pg = PgIndex(r.u32()?);
            let max_bytes = r.u32()?;
            Message::GetBaseline {
                volume,
                pg,
                max_bytes,
                membership_epoch: MembershipEpoch(r.u64()?),
                pin: Lsn(r.u64()?),
                from_extent: r.u64()?,
            }
        }
        super::kind::BASELINE => decode_baseline(r)?,
        super::kind::GET_SEGMENT_STATS => Message::GetSegmentStats,
        super::kind::SEGMENT_STATS => Message::SegmentStats {
            segments: decode_segment_stats(r)?,
        },
        other => unreachable!("kind {other} is not a repair message"),
    })
}

fn decode_baseline(r: &mut Reader) -> Result<Message, MessageError> {
    let volume = VolumeId(r.u64()?);
    let pg = PgIndex(r.u32()?);
    let pages = usize::from(r.u16()?);
    let truncations = usize::from(r.u16()?);
    if pages > MAX_BASELINE_PAGES
        || truncations > MAX_TRUNCATIONS
        || pages * (24 + PAGE_BYTES) + truncations * 32 > r.remaining()
    {
        return Err(DecodeError::new(
            "Baseline",
            format!(
                "{pages} pages (at most {MAX_BASELINE_PAGES}) and {truncations} truncation ranges in {} bytes",
                r.remaining()
            ),
        )
        .into());
    }
    let floor = Lsn(r.u64()?);
    let volume_epoch = VolumeEpoch(r.u64()?);
    let next_extent = r.u64()?;
    let truncations = (0..truncations)
        .map(|_| Truncation::decode(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(pages);
    for _ in 0..pages {
        let page = PageNo(r.u64()?);
        let lsn = Lsn(r.u64()?);
        let crc = r.u32()?;
        r.zeros(4)?;
        let data = r.bytes(PAGE_BYTES)?;
        out.push(BaselinePage {
            page,
            lsn,
            crc,
            data,
        });
    }
    Ok(Message::Baseline {
        volume,
        pg,
        floor,
        volume_epoch,
        next_extent,
        truncations,
        pages: out,
    })
}

fn encode_segment_stats(b: &mut BytesMut, stats: &[SegmentStat]) {
    assert!(stats.len() <= MAX_SEGMENT_STATS);
    b.put_u32_le(stats.len() as u32);
    b.put_u32_le(0);
    for s in stats {
        let start = b.len();
        b.put_u64_le(s.volume.0);
        b.put_u32_le(s.pg.0);
        b.put_u32_le(s.holes);
        b.put_u64_le(s.scl.0);
        b.put_u64_le(s.floor.0);
        b.put_u64_le(s.highest_lsn.0);
        b.put_u64_le(s.records);
        b.put_u64_le(s.volume_epoch.0);
        b.put_u64_le(s.membership_epoch.0);
        b.put_u64_le(s.gossip_records);
        b.put_u64_le(s.gossip_bytes);
        b.put_u64_le(s.rebuild_pages);
        b.put_u64_le(s.rebuild_bytes);
        b.put_u8(s.rebuild as u8);
        b.put_bytes(0, 3);
        debug_assert_eq!(b.len() - start, STAT_BYTES - 4, "SegmentStat layout");
        b.put_u32_le(0);
    }
}

fn decode_segment_stats(r: &mut Reader) -> Result<Vec<SegmentStat>, MessageError> {
    let count = r.u32()? as usize;
    r.zeros(4)?;
    if count > MAX_SEGMENT_STATS || count * STAT_BYTES > r.remaining() {
        return Err(DecodeError::new(
            "SegmentStats",
            format!(
                "{count} segments (at most {MAX_SEGMENT_STATS}) in {} bytes",
                r.remaining()
            ),
        )
        .into());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let volume = VolumeId(r.u64()?);
        let pg = PgIndex(r.u32()?);
        let holes = r.u32()?;
        let mut s = SegmentStat {
            volume,
            pg,
            holes,
            scl: Lsn(r.u64()?),
            floor: Lsn(r.u64()?),
            highest_lsn: Lsn(r.u64()?),
            records: r.u64()?,
            volume_epoch: VolumeEpoch(r.u64()?),
            membership_epoch: MembershipEpoch(r.u64()?),
            gossip_records: r.u64()?,
            gossip_bytes: r.u64()?,
            rebuild_pages: r.u64()?,
            rebuild_bytes: r.u64()?,
            rebuild: RebuildPhase::None,
        };
        s.rebuild = match r.u8()? {
            0 => RebuildPhase::None,
            1 => RebuildPhase::Copying,
            2 => RebuildPhase::CatchingUp,
            other => {
                return Err(
                    DecodeError::new("SegmentStats", format!("rebuild phase {other}")).into(),
                )
            }
        };
        r.zeros(7)?;
        out.push(s);
    }
    Ok(out)
}
