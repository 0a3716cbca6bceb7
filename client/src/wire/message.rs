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
//!     | <-- Error (any request) ----- |   protocol errors also close the connection
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{DecodeError, Reader};
use super::frame::{FrameHeader, FRAME_HEADER_BYTES, MAX_FRAME_BODY_BYTES};
use super::record::{Record, RecordError};
use crate::types::{Lsn, MembershipEpoch, NodeId, PgIndex, ShardId, VolumeEpoch, VolumeId};

/// Most records in one `AppendBatch` or `Records` reply.
pub const MAX_RECORDS_PER_BATCH: usize = 65_536;
/// Longest error message carried in an `Error` reply.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// Most shards a node may announce.
pub const MAX_SHARDS: usize = 1024;

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
}

impl ErrorCode {
    fn from_u16(v: u16) -> Option<ErrorCode> {
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
}

impl NodeStats {
    const FIELDS: usize = 8;

    fn to_array(self) -> [u64; Self::FIELDS] {
        [
            self.records_appended,
            self.bytes_appended,
            self.batches_acked,
            self.log_blocks_written,
            self.log_bytes_written,
            self.log_syncs,
            self.corrupt_blocks,
            self.segments,
        ]
    }

    fn from_array(a: [u64; Self::FIELDS]) -> Self {
        NodeStats {
            records_appended: a[0],
            bytes_appended: a[1],
            batches_acked: a[2],
            log_blocks_written: a[3],
            log_bytes_written: a[4],
            log_syncs: a[5],
            corrupt_blocks: a[6],
            segments: a[7],
        }
    }
}

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
            _ => 64,
        }
    }

    fn encode_body(&self, b: &mut BytesMut) {
        match self {
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
            Message::GetSegmentState { volume, pg } => {
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

    /// Decodes a frame body of the given kind. Payloads stay zero-copy slices of `body`.
    pub fn decode(kind: u16, body: Bytes) -> Result<Message, MessageError> {
        let mut r = Reader::new(body, "message body");
        let msg = match kind {
            kind::HELLO => {
                let protocol_version = r.u16()?;
                r.zeros(6)?;
                Message::Hello { protocol_version }
            }
            kind::HELLO_OK => {
                let protocol_version = r.u16()?;
                let shard = ShardId(r.u16()?);
                let count = usize::from(r.u16()?);
                r.zeros(2)?;
                let node_id = NodeId(r.u32()?);
                if count == 0 || count > MAX_SHARDS || usize::from(shard.0) >= count {
                    return Err(DecodeError::new(
                        "HelloOk",
                        format!("shard {shard} of {count} shards (1..={MAX_SHARDS} allowed)"),
                    )
                    .into());
                }
                let shard_ports = (0..count).map(|_| r.u16()).collect::<Result<_, _>>()?;
                Message::HelloOk {
                    protocol_version,
                    node_id,
                    shard,
                    shard_ports,
                }
            }
            kind::APPEND_BATCH => {
                let volume = VolumeId(r.u64()?);
                let volume_epoch = VolumeEpoch(r.u64()?);
                let membership_epoch = MembershipEpoch(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let records = decode_records(&mut r, "AppendBatch")?;
                Message::AppendBatch {
                    volume,
                    pg,
                    volume_epoch,
                    membership_epoch,
                    records,
                }
            }
            kind::APPEND_ACK => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::AppendAck {
                    volume,
                    pg,
                    durable_lsn: Lsn(r.u64()?),
                    scl: Lsn(r.u64()?),
                }
            }
            kind::GET_SEGMENT_STATE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::GetSegmentState { volume, pg }
            }
            kind::SEGMENT_STATE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::SegmentState {
                    volume,
                    pg,
                    scl: Lsn(r.u64()?),
                    highest_lsn: Lsn(r.u64()?),
                    record_count: r.u64()?,
                    volume_epoch: VolumeEpoch(r.u64()?),
                    membership_epoch: MembershipEpoch(r.u64()?),
                }
            }
            kind::FETCH_RECORDS => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let max_bytes = r.u32()?;
                Message::FetchRecords {
                    volume,
                    pg,
                    max_bytes,
                    after_lsn: Lsn(r.u64()?),
                    to_lsn: Lsn(r.u64()?),
                }
            }
            kind::RECORDS => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let count = r.u32()? as usize;
                let more = match r.u8()? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(DecodeError::new(
                            "Records",
                            format!("more flag must be 0 or 1, found {other}"),
                        )
                        .into())
                    }
                };
                r.zeros(7)?;
                let records = decode_n_records(&mut r, count, "Records")?;
                Message::Records {
                    volume,
                    pg,
                    more,
                    records,
                }
            }
            kind::GET_STATS => Message::GetStats,
            kind::STATS => {
                let mut a = [0u64; NodeStats::FIELDS];
                for v in &mut a {
                    *v = r.u64()?;
                }
                Message::Stats(NodeStats::from_array(a))
            }
            kind::ERROR => {
                let raw_code = r.u16()?;
                r.zeros(2)?;
                let detail = r.u32()?;
                let len = r.u32()? as usize;
                if len > MAX_ERROR_MESSAGE_BYTES {
                    return Err(DecodeError::new(
                        "Error",
                        format!("message of {len} bytes exceeds {MAX_ERROR_MESSAGE_BYTES}"),
                    )
                    .into());
                }
                let code = ErrorCode::from_u16(raw_code).ok_or_else(|| {
                    DecodeError::new("Error", format!("unknown error code {raw_code}"))
                })?;
                let text = r.bytes(len)?;
                let message = String::from_utf8(text.to_vec())
                    .map_err(|_| DecodeError::new("Error", "message is not UTF-8"))?;
                Message::Error {
                    code,
                    detail,
                    message,
                }
            }
            other => return Err(MessageError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn decode_records(r: &mut Reader, what: &'static str) -> Result<Vec<Record>, MessageError> {
    let count = r.u32()? as usize;
    decode_n_records(r, count, what)
}

fn decode_n_records(
    r: &mut Reader,
    count: usize,
    what: &'static str,
) -> Result<Vec<Record>, MessageError> {
    if count > MAX_RECORDS_PER_BATCH {
        return Err(DecodeError::new(
            what,
            format!("{count} records exceed the maximum of {MAX_RECORDS_PER_BATCH}"),
        )
        .into());
    }
    // Every record is at least its header: a count the body cannot hold is rejected before
    // any allocation sized by it.
    if count * super::record::RECORD_HEADER_BYTES > r.remaining() {
        return Err(DecodeError::new(
            what,
            format!("{count} records cannot fit in {} bytes", r.remaining()),
        )
        .into());
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(Record::decode(r)?);
    }
    Ok(records)
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
mod tests {
    use super::*;
    use crate::types::PageNo;
    use crate::wire::frame::take_frame;
    use crate::wire::record::Op;
    use proptest::prelude::*;

    fn arb_records() -> impl Strategy<Value = Vec<Record>> {
        proptest::collection::vec(
            (
                1u64..1 << 40,
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..8,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(lsn, page, data)| {
                    let mut p = 16u32.to_le_bytes().to_vec();
                    p.extend(data);
                    Record::new(
                        Lsn(lsn),
                        Lsn(lsn - 1),
                        Lsn(0),
                        PageNo(page),
                        Op::WriteBytes,
                        lsn % 2 == 0,
                        &p,
                    )
                })
                .collect()
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            any::<u16>().prop_map(|v| Message::Hello {
                protocol_version: v
            }),
            (
                any::<u16>(),
                any::<u32>(),
                proptest::collection::vec(any::<u16>(), 1..16)
            )
                .prop_map(|(v, n, ports)| Message::HelloOk {
                    protocol_version: v,
                    node_id: NodeId(n),
                    shard: ShardId((ports.len() - 1) as u16),
                    shard_ports: ports,
                }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                arb_records()
            )
                .prop_map(|(v, pg, ve, me, records)| Message::AppendBatch {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    volume_epoch: VolumeEpoch(ve),
                    membership_epoch: MembershipEpoch(me),
                    records,
                }),
            (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(v, pg, d, s)| {
                Message::AppendAck {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    durable_lsn: Lsn(d),
                    scl: Lsn(s),
                }
            }),
            (any::<u64>(), any::<u32>()).prop_map(|(v, pg)| Message::GetSegmentState {
                volume: VolumeId(v),
                pg: PgIndex(pg)
            }),
            (any::<u64>(), any::<u32>(), any::<[u64; 5]>()).prop_map(|(v, pg, a)| {
                Message::SegmentState {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    scl: Lsn(a[0]),
                    highest_lsn: Lsn(a[1]),
                    record_count: a[2],
                    volume_epoch: VolumeEpoch(a[3]),
                    membership_epoch: MembershipEpoch(a[4]),
                }
            }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>()
            )
                .prop_map(|(v, pg, a, t, m)| {
                    Message::FetchRecords {
                        volume: VolumeId(v),
                        pg: PgIndex(pg),
                        after_lsn: Lsn(a),
                        to_lsn: Lsn(t),
                        max_bytes: m,
                    }
                }),
            (any::<u64>(), any::<u32>(), any::<bool>(), arb_records()).prop_map(
                |(v, pg, more, records)| {
                    Message::Records {
                        volume: VolumeId(v),
                        pg: PgIndex(pg),
                        more,
                        records,
                    }
                }
            ),
            Just(Message::GetStats),
            any::<[u64; 8]>().prop_map(|a| Message::Stats(NodeStats::from_array(a))),
            (0usize..11, any::<u32>(), ".{0,40}").prop_map(|(c, detail, message)| Message::Error {
                code: ErrorCode::from_u16(c as u16 + 1).unwrap(),
                detail,
                message,
            }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in arb_message(), id: u64) {
            let mut buf = BytesMut::from(&msg.to_frame(id)[..]);
            let (h, body) = take_frame(&mut buf).unwrap().unwrap();
            prop_assert_eq!(h.request_id, id);
            prop_assert_eq!(Message::decode(h.kind, body).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bodies_never_panic(kind in 0u16..14, body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Message::decode(kind, Bytes::from(body));
        }

        #[test]
        fn truncated_bodies_are_errors(msg in arb_message(), cut in 1usize..64) {
            let frame = msg.to_frame(1);
            let body = frame.slice(FRAME_HEADER_BYTES..);
            if body.len() >= cut && !matches!(msg, Message::GetStats) {
                let short = body.slice(..body.len() - cut);
                prop_assert!(Message::decode(msg.kind(), short).is_err());
            }
        }
    }
}

/// The checked-in frame of protocol version 1 must keep decoding to the same message.
/// Regenerate (only for a new version, as a new file) with `HEXAD_WRITE_FIXTURES=1`.
#[cfg(test)]
mod fixture {
    use super::*;
    use crate::types::PageNo;
    use crate::wire::frame::take_frame;
    use crate::wire::record::Op;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/append-batch-v1.bin");

    fn expected() -> Message {
        let mut add = 16u32.to_le_bytes().to_vec();
        add.extend(5u64.to_le_bytes());
        let mut write = 100u32.to_le_bytes().to_vec();
        write.extend(b"hexad");
        Message::AppendBatch {
            volume: VolumeId(7),
            pg: PgIndex(2),
            volume_epoch: VolumeEpoch(3),
            membership_epoch: MembershipEpoch(4),
            records: vec![
                Record::new(
                    Lsn(10),
                    Lsn(9),
                    Lsn(0),
                    PageNo(2_621_441),
                    Op::WriteBytes,
                    false,
                    &write,
                ),
                Record::new(
                    Lsn(11),
                    Lsn(10),
                    Lsn(10),
                    PageNo(2_621_441),
                    Op::AddU64,
                    true,
                    &add,
                ),
            ],
        }
    }

    #[test]
    fn version_1_frame_still_decodes() {
        if std::env::var_os("HEXAD_WRITE_FIXTURES").is_some() {
            std::fs::write(PATH, expected().to_frame(99)).unwrap();
        }
        let bytes = std::fs::read(PATH).expect("fixture present");
        let mut buf = BytesMut::from(&bytes[..]);
        let (h, body) = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!(h.request_id, 99);
        assert_eq!(Message::decode(h.kind, body).unwrap(), expected());
    }
}
