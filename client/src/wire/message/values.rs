//! The small value types messages carry: error codes, truncation ranges, fence modes,
//! segment views, index entries and node counters.

use bytes::{BufMut, BytesMut};

use super::decode::decode_bool;
use super::MessageError;
use crate::types::{Lsn, VolumeEpoch};
use crate::wire::codec::{DecodeError, Reader};

/// Error codes of the `Error` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame itself was invalid (magic, version, CRC, length).
    BadFrame = 1,
    /// The frame kind is not a known request.
    UnknownKind = 2,
    /// The body did not decode (truncated, bad record, trailing bytes).
    Malformed = 3,
    /// The segment belongs to another shard; `detail` is that shard's index.
    WrongShard = 4,
    /// A record's page lies outside the batch's protection group.
    RecordOutsidePg = 5,
    /// A record's LSN is invalid (0, or not increasing within a batch).
    InvalidLsn = 6,
    /// The request's volume epoch is older than the segment's.
    StaleEpoch = 7,
    /// The hot log has no free space; retry later.
    HotLogFull = 8,
    /// The node hit an I/O error.
    Io = 9,
    /// The segment is not held by this node.
    NoSuchSegment = 10,
    /// Anything else.
    Internal = 11,
    /// The segment holds records of older volume epochs and has no truncation range for the
    /// batch's epoch yet: send `Truncate` for that epoch first. `detail` is the segment's
    /// epoch (saturated to `u32`).
    TruncationNeeded = 12,
    /// The segment cannot prove it has every record of the page up to the read point (its
    /// SCL is below it); ask another segment. `detail`: 0.
    NotComplete = 13,
    /// The read point is below the PG's min read point (PGMRPL); `detail`: 0.
    TooOld = 14,
    /// A stored version of the page fails its CRC on this segment; ask another segment
    /// (the node rewrites the version from its log). `detail`: 0.
    Corrupt = 15,
    /// The request's membership epoch for the PG is older than the segment's: ask the
    /// segment for its membership (`GetMembership`) and send again. `detail` is the
    /// segment's epoch (saturated to `u32`).
    StaleMembership = 16,
}

impl ErrorCode {
    pub(super) fn from_u16(v: u16) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::UnknownKind,
            3 => ErrorCode::Malformed,
            4 => ErrorCode::WrongShard,
            5 => ErrorCode::RecordOutsidePg,
            6 => ErrorCode::InvalidLsn,
            7 => ErrorCode::StaleEpoch,
            8 => ErrorCode::HotLogFull,
            9 => ErrorCode::Io,
            10 => ErrorCode::NoSuchSegment,
            11 => ErrorCode::Internal,
            12 => ErrorCode::TruncationNeeded,
            13 => ErrorCode::NotComplete,
            14 => ErrorCode::TooOld,
            15 => ErrorCode::Corrupt,
            16 => ErrorCode::StaleMembership,
            _ => return None,
        })
    }

    /// Whether a node closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::UnknownKind
                | ErrorCode::Malformed
                | ErrorCode::RecordOutsidePg
                | ErrorCode::InvalidLsn
        )
    }
}

/// A truncation range written by the volume open of `epoch` (DESIGN §7): records of older
/// epochs with `start < lsn <= end` are annulled, now and when they arrive late. `start` is
/// the VDL that open recovered; the writer of `epoch` allocates LSNs above `end`.
///
/// `sealed` is set once that open has made every record `<= start` durable on a write
/// quorum of every PG: only then may a later open trust `start` as complete and skip the
/// range's LSNs (which no writer will ever use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truncation {
    pub epoch: VolumeEpoch,
    pub start: Lsn,
    pub end: Lsn,
    pub sealed: bool,
}

impl Truncation {
    /// Bytes of [`Truncation::encode`].
    pub const ENCODED_BYTES: usize = 32;

    /// Whether a record of `record_epoch` at `lsn` is annulled by this range.
    pub fn annuls(&self, record_epoch: VolumeEpoch, lsn: Lsn) -> bool {
        record_epoch < self.epoch && self.start < lsn && lsn <= self.end
    }

    /// The same range from the same open, sealed or not.
    pub fn same_range(&self, other: &Truncation) -> bool {
        (self.epoch, self.start, self.end) == (other.epoch, other.start, other.end)
    }

    /// 32 bytes: epoch, start, end (u64 LE), sealed (u8), 7 zero bytes.
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_u64_le(self.epoch.0);
        b.put_u64_le(self.start.0);
        b.put_u64_le(self.end.0);
        b.put_u8(u8::from(self.sealed));
        b.put_bytes(0, 7);
    }

    pub fn decode(r: &mut Reader) -> Result<Truncation, MessageError> {
        let t = Truncation {
            epoch: VolumeEpoch(r.u64()?),
            start: Lsn(r.u64()?),
            end: Lsn(r.u64()?),
            sealed: decode_bool(r, "Truncation")?,
        };
        r.zeros(7)?;
        if t.end < t.start {
            return Err(DecodeError::new(
                "Truncation",
                format!("range ({}, {}] ends below its start", t.start, t.end),
            )
            .into());
        }
        Ok(t)
    }
}

/// What a `Fence` request does to the segment's volume epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FenceMode {
    /// Change nothing; report the state (read-only open).
    Look = 0,
    /// Raise the epoch to the request's; fails if the segment's is higher.
    Raise = 1,
    /// Raise the epoch only if the segment's is lower (compare-and-set): two opens that chose
    /// the same epoch cannot both win a write quorum of PG 0.
    Exclusive = 2,
    /// Raise the epoch of the whole volume on this shard (like `Raise`): every segment of it
    /// the shard holds or creates later refuses older epochs. An open sends it to every
    /// shard once it has won PG 0, so a fenced writer cannot start a PG the open has not
    /// seen. The request's `pg` is only echoed.
    Volume = 3,
}

/// A segment's state as `FenceOk` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentView {
    /// False when the shard holds nothing of this PG (every other field is then zero).
    pub exists: bool,
    pub volume_epoch: VolumeEpoch,
    pub scl: Lsn,
    pub highest_lsn: Lsn,
    /// The truncation range of the highest epoch this segment holds (epoch 0: none).
    pub latest: Truncation,
    /// The sealed truncation range of the highest epoch (epoch 0: none).
    pub latest_sealed: Truncation,
    /// The highest VDL a writer of the volume reported to this shard since it started
    /// (`Progress`; 0 if none): every record at or below it is committed.
    pub writer_vdl: Lsn,
}

/// What a segment's in-memory index knows of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub lsn: Lsn,
    pub prev_lsn_pg: Lsn,
    pub cpl: bool,
}

/// Counters a shard reports in a `Stats` reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub batches_acked: u64,
    pub log_blocks_written: u64,
    pub log_bytes_written: u64,
    pub log_syncs: u64,
    pub corrupt_blocks: u64,
    pub segments: u64,
    /// Page versions the coalescer wrote, and the records they took in.
    pub page_versions_written: u64,
    pub records_coalesced: u64,
    /// Stored page versions found corrupt (CRC) on read.
    pub corrupt_page_versions: u64,
    /// Pages holding records not yet in the page store (a gauge, not a counter).
    pub pages_pending: u64,
    /// Appends slowed because the hot log was nearly full (back-pressure).
    pub backpressure_waits: u64,
    /// Hot-log files free for the writer to move into, of how many (gauges).
    pub hot_log_files_free: u64,
    pub hot_log_files: u64,
    /// Page-store writes: versions that sit back to back go out in one.
    pub page_writes: u64,
    /// Page reads a segment answered because the page's own backlink chain proved them
    /// complete while its SCL did not.
    pub chain_reads: u64,
    /// Records (and their bytes) this node's gossip pulled from peers into its segments.
    pub gossip_records_pulled: u64,
    pub gossip_bytes_pulled: u64,
    /// Page versions (and their page bytes) segment rebuilds copied from peers.
    pub rebuild_pages_copied: u64,
    pub rebuild_bytes_copied: u64,
    /// Repair replies (gossip records, baseline chunks) that failed their CRC here and were
    /// asked for again.
    pub repair_chunks_rejected: u64,
    /// User + system CPU microseconds the whole node process has used since it started
    /// (`getrusage`). Shard 0 reports it and every other shard 0, so a sum over all of a
    /// cluster's shards is the sum over its nodes.
    pub process_cpu_us: u64,
}

impl NodeStats {
    pub(super) const FIELDS: usize = 23;
    /// Fields a node sent before the page store, and before `page_writes` (shorter
    /// replies are still accepted; the missing fields read as 0).
    pub(super) const FIELDS_V1: usize = 8;
    pub(super) const FIELDS_V2: usize = 15;
    pub(super) const FIELDS_V3: usize = 17;
    pub(super) const FIELDS_V4: usize = 19;
    pub(super) const FIELDS_V5: usize = 22;

    /// Field-by-field sum (gauges too: the total over several shards).
    #[must_use]
    pub fn plus(self, other: NodeStats) -> NodeStats {
        let (a, b) = (self.to_array(), other.to_array());
        NodeStats::from_array(std::array::from_fn(|i| a[i].wrapping_add(b[i])))
    }

    pub(super) fn to_array(self) -> [u64; Self::FIELDS] {
        [
            self.records_appended,
            self.bytes_appended,
            self.batches_acked,
            self.log_blocks_written,
            self.log_bytes_written,
            self.log_syncs,
            self.corrupt_blocks,
            self.segments,
            self.page_versions_written,
            self.records_coalesced,
            self.corrupt_page_versions,
            self.pages_pending,
            self.backpressure_waits,
            self.hot_log_files_free,
            self.hot_log_files,
            self.page_writes,
            self.chain_reads,
            self.gossip_records_pulled,
            self.gossip_bytes_pulled,
            self.rebuild_pages_copied,
            self.rebuild_bytes_copied,
            self.repair_chunks_rejected,
            self.process_cpu_us,
        ]
    }

    pub(super) fn from_array(a: [u64; Self::FIELDS]) -> Self {
        NodeStats {
            records_appended: a[0],
            bytes_appended: a[1],
            batches_acked: a[2],
            log_blocks_written: a[3],
            log_bytes_written: a[4],
            log_syncs: a[5],
            corrupt_blocks: a[6],
            segments: a[7],
            page_versions_written: a[8],
            records_coalesced: a[9],
            corrupt_page_versions: a[10],
            pages_pending: a[11],
            backpressure_waits: a[12],
            hot_log_files_free: a[13],
            hot_log_files: a[14],
            page_writes: a[15],
            chain_reads: a[16],
            gossip_records_pulled: a[17],
            gossip_bytes_pulled: a[18],
            rebuild_pages_copied: a[19],
            rebuild_bytes_copied: a[20],
            repair_chunks_rejected: a[21],
            process_cpu_us: a[22],
        }
    }
}
