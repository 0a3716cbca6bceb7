//! The one message enum of the storage protocol, and its body encodings.
//!
//! Every request carries a `request_id` in its frame header; the reply carries the same id,
//! so a connection can pipeline requests. Replies may come back out of order.
//!
//! ```text
//!   client                         shard
//!     | --- Hello ------------------> |
//!     | <-- HelloOk (ports, shards) - |
//!     | --- AppendBatch(id=1) ------> |   appended to the hot log queue
//!     | --- AppendBatch(id=2) ------> |   rides the same group commit
//!     | <-- AppendAck(id=1) --------- |   sent once durable and findable by recovery
//!     | <-- AppendAck(id=2) --------- |
//!     | --- GetSegmentState --------> |
//!     | <-- SegmentState ------------ |
//!     | --- FetchRecords -----------> |
//!     | <-- Records ----------------- |
//!     | --- ListSegments -----------> |   volume open (recovery, DESIGN §7):
//!     | <-- SegmentList ------------- |   which PGs of the volume this shard holds
//!     | --- Fence ------------------> |   raise the segment's volume epoch; its state
//!     | <-- FenceOk ----------------- |
//!     | --- Truncate ---------------> |   persist a truncation range, drop what it annuls
//!     | <-- TruncateAck ------------- |
//!     | --- FetchIndex -------------> |   LSN, backlink and CPL flag of held records,
//!     | <-- Index ------------------- |   from memory (no log reads)
//!     | --- GetPage ----------------> |   a page as of a read point
//!     | <-- Page -------------------- |
//!     | --- Progress ---------------> |   the writer's VDL, PGMRPL and, per PG, the last
//!     | <-- ProgressAck ------------- |   record at or below that VDL
//!     | --- ClaimReaderSlot --------> |   a read-only attachment claims, renews or gives
//!     | <-- ReaderSlot -------------- |   back one of the volume's reader slots
//!     | --- PullRecords ------------> |   node to node (gossip): FetchRecords with the
//!     | <-- Records ----------------- |   puller's membership epoch
//!     | --- GetBaseline ------------> |   node to node (segment rebuild): a chunk of
//!     | <-- Baseline ---------------- |   the page baseline, CRC per page
//!     | --- GetSegmentStats --------> |   every segment the shard holds, with SCL,
//!     | <-- SegmentStats ------------ |   holes, gossip and rebuild progress
//!     | --- GetMembership ----------> |   who holds the PG, as this segment knows it
//!     | <-- MembershipIs ------------ |
//!     | --- SetMembership ----------> |   an operator's replacement step (a newer epoch),
//!     | <-- MembershipIs ------------ |   persisted before the reply
//!     | <-- Error (any request) ----- |   protocol errors also close the connection
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::DecodeError;
use super::frame::{FrameHeader, FRAME_HEADER_BYTES, MAX_FRAME_BODY_BYTES};
use super::record::{Record, RecordError};
use crate::membership::Membership;
use crate::types::{
    Lsn, MembershipEpoch, NodeId, PageNo, PgIndex, ShardId, VolumeEpoch, VolumeId, MAX_PGS,
    PAGE_BYTES,
};

/// Most entries in one `Index` reply (17 bytes each).
pub const MAX_INDEX_ENTRIES: usize = 262_144;
/// Most records in one `AppendBatch` or `Records` reply.
pub const MAX_RECORDS_PER_BATCH: usize = 65_536;
/// Longest error message carried in an `Error` reply.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// Most shards a node may announce.
pub const MAX_SHARDS: usize = 1024;

mod decode;
mod repair;
mod values;

pub use repair::{BaselinePage, RebuildPhase, SegmentStat, BASELINE_DONE, MAX_BASELINE_PAGES};
pub use values::{ErrorCode, FenceMode, IndexEntry, NodeStats, SegmentView, Truncation};

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello {
        protocol_version: u16,
    },
    HelloOk {
        protocol_version: u16,
        node_id: NodeId,
        shard: ShardId,
        /// The listening port of every shard, indexed by shard.
        shard_ports: Vec<u16>,
    },
    AppendBatch {
        volume: VolumeId,
        pg: PgIndex,
        volume_epoch: VolumeEpoch,
        membership_epoch: MembershipEpoch,
        records: Vec<Record>,
    },
    AppendAck {
        volume: VolumeId,
        pg: PgIndex,
        /// Highest LSN of the batch; every record of the batch is durable.
        durable_lsn: Lsn,
        /// The segment's complete LSN after this batch.
        scl: Lsn,
    },
    GetSegmentState {
        volume: VolumeId,
        pg: PgIndex,
    },
    SegmentState {
        volume: VolumeId,
        pg: PgIndex,
        scl: Lsn,
        highest_lsn: Lsn,
        record_count: u64,
        volume_epoch: VolumeEpoch,
        membership_epoch: MembershipEpoch,
    },
    FetchRecords {
        volume: VolumeId,
        pg: PgIndex,
        /// Exclusive lower bound.
        after_lsn: Lsn,
        /// Inclusive upper bound.
        to_lsn: Lsn,
        /// Stop adding records once the reply would exceed this many bytes.
        max_bytes: u32,
    },
    Records {
        volume: VolumeId,
        pg: PgIndex,
        /// True when records in the range were left out for `max_bytes`; ask again after the last.
        more: bool,
        records: Vec<Record>,
    },
    GetStats,
    Stats(NodeStats),
    /// Which PGs of `volume` the shard holds.
    ListSegments {
        volume: VolumeId,
    },
    SegmentList {
        volume: VolumeId,
        /// Highest volume epoch among those segments (0 when there are none).
        max_epoch: VolumeEpoch,
        pgs: Vec<PgIndex>,
    },
    /// Raises (or only reads) a segment's volume epoch; creates the segment if needed
    /// (except for `Look`) so that the epoch is persisted even where no record is.
    Fence {
        volume: VolumeId,
        pg: PgIndex,
        epoch: VolumeEpoch,
        mode: FenceMode,
    },
    FenceOk {
        volume: VolumeId,
        pg: PgIndex,
        view: SegmentView,
    },
    /// Persists a truncation range (or seals one already held) and drops what it annuls.
    Truncate {
        volume: VolumeId,
        pg: PgIndex,
        truncation: Truncation,
    },
    TruncateAck {
        volume: VolumeId,
        pg: PgIndex,
        /// The segment's SCL after the truncation.
        scl: Lsn,
    },
    /// The index entries of held records with `after_lsn < lsn <= to_lsn`.
    FetchIndex {
        volume: VolumeId,
        pg: PgIndex,
        after_lsn: Lsn,
        to_lsn: Lsn,
        /// At most this many entries (capped at `MAX_INDEX_ENTRIES`).
        max_entries: u32,
    },
    Index {
        volume: VolumeId,
        pg: PgIndex,
        /// True when entries in the range were left out; ask again after the last.
        more: bool,
        entries: Vec<IndexEntry>,
    },
    /// The page as of `read_lsn`: every record of it with LSN ≤ `read_lsn` applied. The
    /// segment answers only if its SCL ≥ `complete_lsn`, the PG's last record at or below
    /// `read_lsn` as the writer knows it (so a segment whose chain ends there qualifies).
    GetPage {
        volume: VolumeId,
        pg: PgIndex,
        page: PageNo,
        read_lsn: Lsn,
        complete_lsn: Lsn,
        /// The page's last record at or below `read_lsn`, if the reader knows it (0: it
        /// does not): a segment whose SCL is short of `complete_lsn` may still answer when
        /// the page's own backlink chain from it is complete there. Absent in frames from
        /// older clients (read as 0).
        page_head: Lsn,
    },
    Page {
        volume: VolumeId,
        pg: PgIndex,
        page: PageNo,
        /// LSN of the last record applied (0: never written, all zeros).
        page_lsn: Lsn,
        /// Exactly `PAGE_BYTES` bytes.
        data: Bytes,
    },
    /// From the writer: its VDL, its promise never to read below `pgmrpl`, and for each PG
    /// the shard serves, the PG's last record at or below `vdl` (a segment whose SCL reaches
    /// it can answer reads at `vdl` and below).
    Progress {
        volume: VolumeId,
        vdl: Lsn,
        pgmrpl: Lsn,
        pgs: Vec<(PgIndex, Lsn)>,
    },
    /// From a read-only attachment (DESIGN §6: up to [`crate::MAX_READERS`] per volume), to
    /// a node of PG 0: grant slot `slot` to `reader` if it is free, its lease ran out, or
    /// `reader` already holds it (a renewal); with `release`, give it back. A reader holds a
    /// slot once 4 of PG 0's 6 segments granted it, so two readers never hold the same one.
    ClaimReaderSlot {
        volume: VolumeId,
        reader: u64,
        slot: u32,
        release: bool,
    },
    /// Gossip between the segments of a PG: `FetchRecords` carrying the puller's membership
    /// epoch for the segment; a segment that knows a newer one refuses (`StaleEpoch`).
    /// Answered with `Records`.
    PullRecords {
        volume: VolumeId,
        pg: PgIndex,
        membership_epoch: MembershipEpoch,
        after_lsn: Lsn,
        to_lsn: Lsn,
        max_bytes: u32,
    },
    /// Who holds the slot after the request (0: nobody), and how long a grant lasts.
    ReaderSlot {
        volume: VolumeId,
        slot: u32,
        holder: u64,
        lease_ms: u32,
    },
    ProgressAck {
        volume: VolumeId,
    },
    /// Segment rebuild (DESIGN §8), node to node: a chunk of the segment's page baseline,
    /// the newest valid version of each stored page in the page-file extents from
    /// `from_extent` on, about `max_bytes` of pages. `pin` 0 starts a rebuild: the server
    /// keeps its floor from moving (so the records above it stay pullable) and answers it as
    /// `Baseline.floor`; later chunks send it back, which renews the pin. `max_bytes` 0
    /// releases the pin. Carries the puller's membership epoch, as `PullRecords`.
    GetBaseline {
        volume: VolumeId,
        pg: PgIndex,
        membership_epoch: MembershipEpoch,
        pin: Lsn,
        from_extent: u64,
        max_bytes: u32,
    },
    /// A baseline chunk: every record at or below `floor` is in these versions (over the
    /// whole stream); `next_extent` is where to continue ([`repair::BASELINE_DONE`] at the
    /// end). The first chunk also carries the segment's truncation ranges.
    Baseline {
        volume: VolumeId,
        pg: PgIndex,
        floor: Lsn,
        volume_epoch: VolumeEpoch,
        next_extent: u64,
        truncations: Vec<Truncation>,
        pages: Vec<BaselinePage>,
    },
    /// Every segment the shard holds, with its state (operators; a node looking for the
    /// segments it should hold).
    GetSegmentStats,
    SegmentStats {
        segments: Vec<SegmentStat>,
    },
    /// Who holds the PG, as this segment knows it (`NoSuchSegment` if it holds none).
    GetMembership {
        volume: VolumeId,
        pg: PgIndex,
    },
    /// Stores a newer membership for the segment, creating the segment if needed (a node
    /// joining the PG); refused (`StaleMembership`) if the segment knows a newer epoch, or
    /// (`Internal`) the same epoch with other members. Answered once durable.
    SetMembership {
        volume: VolumeId,
        pg: PgIndex,
        membership: Membership,
    },
    /// The segment's membership after the request, with its SCL (an operator watches a
    /// joining node hydrate).
    MembershipIs {
        volume: VolumeId,
        pg: PgIndex,
        membership: Membership,
        scl: Lsn,
    },
    Error {
        code: ErrorCode,
        /// Code-specific: for `WrongShard`, the owning shard's index.
        detail: u32,
        message: String,
    },
}

/// Why a frame body is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("unknown message kind {0}")]
    UnknownKind(u16),
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl MessageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::UnknownKind(_) => ErrorCode::UnknownKind,
            MessageError::Record(RecordError::ZeroLsn | RecordError::BadBacklink { .. }) => {
                ErrorCode::InvalidLsn
            }
            MessageError::Malformed(_) | MessageError::Record(_) => ErrorCode::Malformed,
        }
    }
}

mod kind {
    pub const HELLO: u16 = 1;
    pub const HELLO_OK: u16 = 2;
    pub const APPEND_BATCH: u16 = 3;
    pub const APPEND_ACK: u16 = 4;
    pub const GET_SEGMENT_STATE: u16 = 5;
    pub const SEGMENT_STATE: u16 = 6;
    pub const FETCH_RECORDS: u16 = 7;
    pub const RECORDS: u16 = 8;
    pub const GET_STATS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ERROR: u16 = 11;
    pub const LIST_SEGMENTS: u16 = 12;
    pub const SEGMENT_LIST: u16 = 13;
    pub const FENCE: u16 = 14;
    pub const FENCE_OK: u16 = 15;
    pub const TRUNCATE: u16 = 16;
    pub const TRUNCATE_ACK: u16 = 17;
    pub const FETCH_INDEX: u16 = 18;
    pub const INDEX: u16 = 19;
    pub const GET_PAGE: u16 = 20;
    pub const PAGE: u16 = 21;
    pub const PROGRESS: u16 = 22;
    pub const PROGRESS_ACK: u16 = 23;
    pub const CLAIM_READER_SLOT: u16 = 24;
    pub const READER_SLOT: u16 = 25;
    pub const PULL_RECORDS: u16 = 26;
    pub const GET_BASELINE: u16 = 27;
    pub const BASELINE: u16 = 28;
    pub const GET_SEGMENT_STATS: u16 = 29;
    pub const SEGMENT_STATS: u16 = 30;
    pub const GET_MEMBERSHIP: u16 = 31;
    pub const SET_MEMBERSHIP: u16 = 32;
    pub const MEMBERSHIP_IS: u16 = 33;
}

impl Message {
    pub fn kind(&self) -> u16 {
        match self {
            Message::Hello { .. } => kind::HELLO,
            Message::HelloOk { .. } => kind::HELLO_OK,
            Message::AppendBatch { .. } => kind::APPEND_BATCH,
            Message::AppendAck { .. } => kind::APPEND_ACK,
            Message::GetSegmentState { .. } => kind::GET_SEGMENT_STATE,
            Message::SegmentState { .. } => kind::SEGMENT_STATE,
            Message::FetchRecords { .. } => kind::FETCH_RECORDS,
            Message::Records { .. } => kind::RECORDS,
            Message::GetStats => kind::GET_STATS,
            Message::Stats(_) => kind::STATS,
            Message::Error { .. } => kind::ERROR,
            Message::ListSegments { .. } => kind::LIST_SEGMENTS,
            Message::SegmentList { .. } => kind::SEGMENT_LIST,
            Message::Fence { .. } => kind::FENCE,
            Message::FenceOk { .. } => kind::FENCE_OK,
            Message::Truncate { .. } => kind::TRUNCATE,
            Message::TruncateAck { .. } => kind::TRUNCATE_ACK,
            Message::FetchIndex { .. } => kind::FETCH_INDEX,
            Message::Index { .. } => kind::INDEX,
            Message::GetPage { .. } => kind::GET_PAGE,
            Message::Page { .. } => kind::PAGE,
            Message::Progress { .. } => kind::PROGRESS,
            Message::ProgressAck { .. } => kind::PROGRESS_ACK,
            Message::ClaimReaderSlot { .. } => kind::CLAIM_READER_SLOT,
            Message::ReaderSlot { .. } => kind::READER_SLOT,
            Message::PullRecords { .. } => kind::PULL_RECORDS,
            Message::GetBaseline { .. } => kind::GET_BASELINE,
            Message::Baseline { .. } => kind::BASELINE,
            Message::GetSegmentStats => kind::GET_SEGMENT_STATS,
            Message::SegmentStats { .. } => kind::SEGMENT_STATS,
            Message::GetMembership { .. } => kind::GET_MEMBERSHIP,
            Message::SetMembership { .. } => kind::SET_MEMBERSHIP,
            Message::MembershipIs { .. } => kind::MEMBERSHIP_IS,
        }
    }

    /// Appends the whole frame (header and body) to `out`, ready for one send.
    pub fn encode_frame(&self, request_id: u64, out: &mut BytesMut) {
        let mut body = BytesMut::with_capacity(self.body_len_hint());
        self.encode_body(&mut body);
        out.reserve(FRAME_HEADER_BYTES + body.len());
        FrameHeader::write(out, self.kind(), request_id, &body);
        out.put_slice(&body);
    }

    /// The frame as one buffer.
    pub fn to_frame(&self, request_id: u64) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_frame(request_id, &mut out);
        out.freeze()
    }

    fn body_len_hint(&self) -> usize {
        match self {
            Message::AppendBatch { records, .. } | Message::Records { records, .. } => {
                32 + records.iter().map(Record::encoded_len).sum::<usize>()
            }
            Message::SegmentList { pgs, .. } => 24 + 4 * pgs.len(),
            Message::Index { entries, .. } => 24 + 17 * entries.len(),
            Message::Page { .. } => 32 + PAGE_BYTES,
            Message::Progress { pgs, .. } => 32 + 16 * pgs.len(),
            Message::Baseline {
                pages, truncations, ..
            } => 48 + 32 * truncations.len() + (24 + PAGE_BYTES) * pages.len(),
            Message::SegmentStats { segments } => 8 + 104 * segments.len(),
            _ => 96,
        }
    }

    fn encode_body(&self, b: &mut BytesMut) {
        match self {
            m @ (Message::GetBaseline { .. }
            | Message::Baseline { .. }
            | Message::GetSegmentStats
            | Message::SegmentStats { .. }) => repair::encode(m, b),
            Message::Hello { protocol_version } => {
                b.put_u16_le(*protocol_version);
                b.put_bytes(0, 6);
            }
            Message::HelloOk {
                protocol_version,
                node_id,
                shard,
                shard_ports,
            } => {
                assert!(!shard_ports.is_empty() && shard_ports.len() <= MAX_SHARDS);
                b.put_u16_le(*protocol_version);
                b.put_u16_le(shard.0);
                b.put_u16_le(shard_ports.len() as u16);
                b.put_u16_le(0);
                b.put_u32_le(node_id.0);
                for port in shard_ports {
                    b.put_u16_le(*port);
                }
            }
            Message::AppendBatch {
                volume,
                pg,
                volume_epoch,
                membership_epoch,
                records,
            } => {
                assert!(records.len() <= MAX_RECORDS_PER_BATCH);
                b.put_u64_le(volume.0);
                b.put_u64_le(volume_epoch.0);
                b.put_u64_le(membership_epoch.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(records.len() as u32);
                for r in records {
                    b.put_slice(r.raw());
                }
            }
            Message::AppendAck {
                volume,
                pg,
                durable_lsn,
                scl,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(durable_lsn.0);
                b.put_u64_le(scl.0);
            }
            Message::GetSegmentState { volume, pg } | Message::GetMembership { volume, pg } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
            }
            Message::SegmentState {
                volume,
                pg,
                scl,
                highest_lsn,
                record_count,
                volume_epoch,
                membership_epoch,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(scl.0);
                b.put_u64_le(highest_lsn.0);
                b.put_u64_le(*record_count);
                b.put_u64_le(volume_epoch.0);
                b.put_u64_le(membership_epoch.0);
            }
            Message::FetchRecords {
                volume,
                pg,
                after_lsn,
                to_lsn,
                max_bytes,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(*max_bytes);
                b.put_u64_le(after_lsn.0);
                b.put_u64_le(to_lsn.0);
            }
            Message::Records {
                volume,
                pg,
                more,
                records,
            } => {
                assert!(records.len() <= MAX_RECORDS_PER_BATCH);
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(records.len() as u32);
                b.put_u8(u8::from(*more));
                b.put_bytes(0, 7);
                for r in records {
                    b.put_slice(r.raw());
                }
            }
            Message::GetStats => {}
            Message::SetMembership {
                volume,
                pg,
                membership,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                membership.encode(b);
            }
            Message::MembershipIs {
                volume,
                pg,
                membership,
                scl,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(scl.0);
                membership.encode(b);
            }
            Message::ListSegments { volume } | Message::ProgressAck { volume } => {
                b.put_u64_le(volume.0);
            }
            Message::ClaimReaderSlot {
                volume,
                reader,
                slot,
                release,
            } => {
                b.put_u64_le(volume.0);
                b.put_u64_le(*reader);
                b.put_u32_le(*slot);
                b.put_u8(u8::from(*release));
                b.put_bytes(0, 3);
            }
            Message::PullRecords {
                volume,
                pg,
                membership_epoch,
                after_lsn,
                to_lsn,
                max_bytes,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(*max_bytes);
                b.put_u64_le(membership_epoch.0);
                b.put_u64_le(after_lsn.0);
                b.put_u64_le(to_lsn.0);
            }
            Message::ReaderSlot {
                volume,
                slot,
                holder,
                lease_ms,
            } => {
                b.put_u64_le(volume.0);
                b.put_u64_le(*holder);
                b.put_u32_le(*slot);
                b.put_u32_le(*lease_ms);
            }
            Message::SegmentList {
                volume,
                max_epoch,
                pgs,
            } => {
                assert!(pgs.len() <= MAX_PGS as usize);
                b.put_u64_le(volume.0);
                b.put_u64_le(max_epoch.0);
                b.put_u32_le(pgs.len() as u32);
                b.put_u32_le(0);
                for pg in pgs {
                    b.put_u32_le(pg.0);
                }
            }
            Message::Fence {
                volume,
                pg,
                epoch,
                mode,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u8(*mode as u8);
                b.put_bytes(0, 3);
                b.put_u64_le(epoch.0);
            }
            Message::FenceOk { volume, pg, view } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u8(u8::from(view.exists));
                b.put_bytes(0, 3);
                b.put_u64_le(view.volume_epoch.0);
                b.put_u64_le(view.scl.0);
                b.put_u64_le(view.highest_lsn.0);
                view.latest.encode(b);
                view.latest_sealed.encode(b);
                b.put_u64_le(view.writer_vdl.0);
            }
            Message::Truncate {
                volume,
                pg,
                truncation,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                truncation.encode(b);
            }
            Message::FetchIndex {
                volume,
                pg,
                after_lsn,
                to_lsn,
                max_entries,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(*max_entries);
                b.put_u64_le(after_lsn.0);
                b.put_u64_le(to_lsn.0);
            }
            Message::Index {
                volume,
                pg,
                more,
                entries,
            } => {
                assert!(entries.len() <= MAX_INDEX_ENTRIES);
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(entries.len() as u32);
                b.put_u8(u8::from(*more));
                b.put_bytes(0, 7);
                for e in entries {
                    b.put_u64_le(e.lsn.0);
                    b.put_u64_le(e.prev_lsn_pg.0);
                    b.put_u8(u8::from(e.cpl));
                }
            }
            Message::GetPage {
                volume,
                pg,
                page,
                read_lsn,
                complete_lsn,
                page_head,
            } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(page.0);
                b.put_u64_le(read_lsn.0);
                b.put_u64_le(complete_lsn.0);
                b.put_u64_le(page_head.0);
            }
            Message::Page {
                volume,
                pg,
                page,
                page_lsn,
                data,
            } => {
                assert_eq!(data.len(), PAGE_BYTES);
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(page.0);
                b.put_u64_le(page_lsn.0);
                b.put_slice(data);
            }
            Message::Progress {
                volume,
                vdl,
                pgmrpl,
                pgs,
            } => {
                assert!(pgs.len() <= MAX_PGS as usize);
                b.put_u64_le(volume.0);
                b.put_u64_le(vdl.0);
                b.put_u64_le(pgmrpl.0);
                b.put_u32_le(pgs.len() as u32);
                b.put_u32_le(0);
                for (pg, lsn) in pgs {
                    b.put_u32_le(pg.0);
                    b.put_u32_le(0);
                    b.put_u64_le(lsn.0);
                }
            }
            Message::TruncateAck { volume, pg, scl } => {
                b.put_u64_le(volume.0);
                b.put_u32_le(pg.0);
                b.put_u32_le(0);
                b.put_u64_le(scl.0);
            }
            Message::Stats(stats) => {
                for v in stats.to_array() {
                    b.put_u64_le(v);
                }
            }
            Message::Error {
                code,
                detail,
                message,
            } => {
                let msg = truncate_utf8(message, MAX_ERROR_MESSAGE_BYTES);
                b.put_u16_le(*code as u16);
                b.put_u16_le(0);
                b.put_u32_le(*detail);
                b.put_u32_le(msg.len() as u32);
                b.put_slice(msg.as_bytes());
            }
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const _: () = assert!(MAX_RECORDS_PER_BATCH * 48 > MAX_FRAME_BODY_BYTES / 4);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fixture;
