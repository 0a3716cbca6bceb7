//! Decoding of every message body (the inverse of `Message::encode_body` in `mod.rs`).

use bytes::Bytes;

use super::values::{ErrorCode, FenceMode, IndexEntry, NodeStats, SegmentView, Truncation};
use super::{kind, repair, Message, MessageError, MAX_ERROR_MESSAGE_BYTES, MAX_INDEX_ENTRIES};
use super::{MAX_RECORDS_PER_BATCH, MAX_SHARDS};
use crate::membership::Membership;
use crate::types::{
    Lsn, MembershipEpoch, NodeId, PageNo, PgIndex, ShardId, VolumeEpoch, VolumeId, MAX_PGS,
    PAGE_BYTES,
};
use crate::wire::codec::{DecodeError, Reader};
use crate::wire::record::Record;

impl Message {
    /// Decodes a frame body of the given kind. Payloads stay zero-copy slices of `body`.
    pub fn decode(kind: u16, body: Bytes) -> Result<Message, MessageError> {
        let mut r = Reader::new(body, "message body");
        let msg = match kind {
            kind::GET_BASELINE | kind::BASELINE | kind::GET_SEGMENT_STATS | kind::SEGMENT_STATS => {
                repair::decode(kind, &mut r)?
            }
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
            kind::GET_MEMBERSHIP => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::GetMembership { volume, pg }
            }
            kind::SET_MEMBERSHIP => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::SetMembership {
                    volume,
                    pg,
                    membership: Membership::decode(&mut r)?,
                }
            }
            kind::MEMBERSHIP_IS => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                let scl = Lsn(r.u64()?);
                Message::MembershipIs {
                    volume,
                    pg,
                    membership: Membership::decode(&mut r)?,
                    scl,
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
                let more = decode_bool(&mut r, "Records")?;
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
            kind::LIST_SEGMENTS => Message::ListSegments {
                volume: VolumeId(r.u64()?),
            },
            kind::SEGMENT_LIST => {
                let volume = VolumeId(r.u64()?);
                let max_epoch = VolumeEpoch(r.u64()?);
                let count = r.u32()?;
                r.zeros(4)?;
                if count > MAX_PGS || count as usize * 4 > r.remaining() {
                    return Err(DecodeError::new(
                        "SegmentList",
                        format!("{count} PGs (at most {MAX_PGS}, 4 bytes each)"),
                    )
                    .into());
                }
                let pgs = (0..count)
                    .map(|_| r.u32().map(PgIndex))
                    .collect::<Result<_, _>>()?;
                Message::SegmentList {
                    volume,
                    max_epoch,
                    pgs,
                }
            }
            kind::FENCE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let mode = match r.u8()? {
                    0 => FenceMode::Look,
                    1 => FenceMode::Raise,
                    2 => FenceMode::Exclusive,
                    3 => FenceMode::Volume,
                    other => {
                        return Err(
                            DecodeError::new("Fence", format!("unknown mode {other}")).into()
                        )
                    }
                };
                r.zeros(3)?;
                Message::Fence {
                    volume,
                    pg,
                    mode,
                    epoch: VolumeEpoch(r.u64()?),
                }
            }
            kind::FENCE_OK => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let exists = decode_bool(&mut r, "FenceOk")?;
                r.zeros(3)?;
                let view = SegmentView {
                    exists,
                    volume_epoch: VolumeEpoch(r.u64()?),
                    scl: Lsn(r.u64()?),
                    highest_lsn: Lsn(r.u64()?),
                    latest: Truncation::decode(&mut r)?,
                    latest_sealed: Truncation::decode(&mut r)?,
                    writer_vdl: Lsn(r.u64()?),
                };
                Message::FenceOk { volume, pg, view }
            }
            kind::TRUNCATE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::Truncate {
                    volume,
                    pg,
                    truncation: Truncation::decode(&mut r)?,
                }
            }
            kind::FETCH_INDEX => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let max_entries = r.u32()?;
                Message::FetchIndex {
                    volume,
                    pg,
                    max_entries,
                    after_lsn: Lsn(r.u64()?),
                    to_lsn: Lsn(r.u64()?),
                }
            }
            kind::INDEX => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let count = r.u32()? as usize;
                let more = decode_bool(&mut r, "Index")?;
                r.zeros(7)?;
                if count > MAX_INDEX_ENTRIES || count * 17 > r.remaining() {
                    return Err(DecodeError::new(
                        "Index",
                        format!("{count} entries (at most {MAX_INDEX_ENTRIES}, 17 bytes each)"),
                    )
                    .into());
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let lsn = Lsn(r.u64()?);
                    let prev_lsn_pg = Lsn(r.u64()?);
                    let cpl = decode_bool(&mut r, "Index")?;
                    entries.push(IndexEntry {
                        lsn,
                        prev_lsn_pg,
                        cpl,
                    });
                }
                Message::Index {
                    volume,
                    pg,
                    more,
                    entries,
                }
            }
            kind::GET_PAGE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::GetPage {
                    volume,
                    pg,
                    page: PageNo(r.u64()?),
                    read_lsn: Lsn(r.u64()?),
                    complete_lsn: Lsn(r.u64()?),
                    page_head: Lsn(if r.remaining() == 0 { 0 } else { r.u64()? }),
                }
            }
            kind::PAGE => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::Page {
                    volume,
                    pg,
                    page: PageNo(r.u64()?),
                    page_lsn: Lsn(r.u64()?),
                    data: r.bytes(PAGE_BYTES)?,
                }
            }
            kind::PROGRESS => {
                let volume = VolumeId(r.u64()?);
                let vdl = Lsn(r.u64()?);
                let pgmrpl = Lsn(r.u64()?);
                let count = r.u32()?;
                r.zeros(4)?;
                if count > MAX_PGS || count as usize * 16 > r.remaining() {
                    return Err(DecodeError::new(
                        "Progress",
                        format!("{count} PGs (at most {MAX_PGS}, 16 bytes each)"),
                    )
                    .into());
                }
                let mut pgs = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let pg = PgIndex(r.u32()?);
                    r.zeros(4)?;
                    pgs.push((pg, Lsn(r.u64()?)));
                }
                Message::Progress {
                    volume,
                    vdl,
                    pgmrpl,
                    pgs,
                }
            }
            kind::PROGRESS_ACK => Message::ProgressAck {
                volume: VolumeId(r.u64()?),
            },
            kind::CLAIM_READER_SLOT => {
                let volume = VolumeId(r.u64()?);
                let reader = r.u64()?;
                let slot = r.u32()?;
                let release = decode_bool(&mut r, "release flag")?;
                r.zeros(3)?;
                Message::ClaimReaderSlot {
                    volume,
                    reader,
                    slot,
                    release,
                }
            }
            kind::PULL_RECORDS => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                let max_bytes = r.u32()?;
                Message::PullRecords {
                    volume,
                    pg,
                    max_bytes,
                    membership_epoch: MembershipEpoch(r.u64()?),
                    after_lsn: Lsn(r.u64()?),
                    to_lsn: Lsn(r.u64()?),
                }
            }
            kind::READER_SLOT => {
                let volume = VolumeId(r.u64()?);
                let holder = r.u64()?;
                Message::ReaderSlot {
                    volume,
                    holder,
                    slot: r.u32()?,
                    lease_ms: r.u32()?,
                }
            }
            kind::TRUNCATE_ACK => {
                let volume = VolumeId(r.u64()?);
                let pg = PgIndex(r.u32()?);
                r.zeros(4)?;
                Message::TruncateAck {
                    volume,
                    pg,
                    scl: Lsn(r.u64()?),
                }
            }
            kind::STATS => {
                let mut a = [0u64; NodeStats::FIELDS];
                let fields = match r.remaining() / 8 {
                    NodeStats::FIELDS_V1 => NodeStats::FIELDS_V1,
                    NodeStats::FIELDS_V2 => NodeStats::FIELDS_V2,
                    NodeStats::FIELDS_V3 => NodeStats::FIELDS_V3,
                    NodeStats::FIELDS_V4 => NodeStats::FIELDS_V4,
                    NodeStats::FIELDS_V5 => NodeStats::FIELDS_V5,
                    _ => NodeStats::FIELDS,
                };
                for v in &mut a[..fields] {
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

pub(super) fn decode_bool(r: &mut Reader, what: &'static str) -> Result<bool, MessageError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => {
            Err(DecodeError::new(what, format!("a flag must be 0 or 1, found {other}")).into())
        }
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
    if count * crate::wire::record::RECORD_HEADER_BYTES > r.remaining() {
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
