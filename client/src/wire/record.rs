//! One redo record. The same bytes travel on the wire and sit in the node's hot log.
//!
//! ```text
//!  0        8             16              24       32          36   37    38        44       48
//!  +--------+-------------+---------------+--------+-----------+----+-----+---------+--------+---------
//!  | lsn    | prev_lsn_pg | prev_lsn_page | page   | payload   | op |flags| reserved| crc32c | payload
//!  | u64    | u64         | u64           | u64    | len u32   | u8 | u8  | 6 B = 0 | u32    | ...
//!  +--------+-------------+---------------+--------+-----------+----+-----+---------+--------+---------
//! ```
//! `crc32c` covers bytes 0..44 and the payload. Flags: bit 0 = CPL (ends a
//! mini-transaction); bit 1 = `prev_lsn_page` is only an upper bound (the writer did not
//! know the page's previous record, e.g. its first write of the page after a volume open:
//! that record is at or below this LSN); other bits must be zero.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{DecodeError, Reader};
use crate::types::{Lsn, PageNo, PAGE_BYTES};

pub const RECORD_HEADER_BYTES: usize = 48;
/// Largest payload of one record: a full page image.
pub const MAX_RECORD_PAYLOAD_BYTES: usize = PAGE_BYTES;
const FLAG_CPL: u8 = 1;
const FLAG_PAGE_BOUND: u8 = 2;

/// A record's backlink to the previous record of its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageLink {
    /// The previous record of the page is at this LSN (0: the page has none).
    Exact(Lsn),
    /// The previous record of the page is at or below this LSN.
    AtMost(Lsn),
}

impl PageLink {
    pub fn lsn(self) -> Lsn {
        match self {
            PageLink::Exact(l) | PageLink::AtMost(l) => l,
        }
    }
}

/// What a record does to its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Payload is the whole 8 KiB page.
    PageImage = 1,
    /// Payload: `offset: u32` then the bytes to write at it.
    WriteBytes = 2,
    /// Payload: `offset: u32`, `delta: u64`; adds delta to the little-endian u64 at offset
    /// (wrapping). Not idempotent: it proves exactly-once application.
    AddU64 = 3,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        match v {
            1 => Some(Op::PageImage),
            2 => Some(Op::WriteBytes),
            3 => Some(Op::AddU64),
            _ => None,
        }
    }

    /// Checks that `payload` has the shape this op requires.
    fn check_payload(self, payload: &[u8]) -> Result<(), String> {
        let offset_end = |extra: usize| -> Result<(), String> {
            if payload.len() < 4 {
                return Err(format!(
                    "{self:?} payload needs a 4-byte offset, has {} bytes",
                    payload.len()
                ));
            }
            let offset =
                u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
            if offset + extra > PAGE_BYTES {
                return Err(format!("{self:?} at offset {offset} + {extra} bytes runs past the {PAGE_BYTES}-byte page"));
            }
            Ok(())
        };
        match self {
            Op::PageImage if payload.len() == PAGE_BYTES => Ok(()),
            Op::PageImage => Err(format!(
                "page image must be {PAGE_BYTES} bytes, found {}",
                payload.len()
            )),
            Op::WriteBytes => offset_end(payload.len().saturating_sub(4)),
            Op::AddU64 if payload.len() == 12 => offset_end(8),
            Op::AddU64 => Err(format!(
                "AddU64 payload must be 12 bytes, found {}",
                payload.len()
            )),
        }
    }
}

/// A decoded, checked redo record. `raw` holds its exact encoding (header + payload).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub prev_lsn_pg: Lsn,
    /// The page backlink's LSN; [`Record::page_link`] says whether it is exact.
    pub prev_lsn_page: Lsn,
    pub page: PageNo,
    pub op: Op,
    pub cpl: bool,
    prev_page_bound: bool,
    raw: Bytes,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("lsn", &self.lsn)
            .field("prev_lsn_pg", &self.prev_lsn_pg)
            .field("page_link", &self.page_link())
            .field("page", &self.page)
            .field("op", &self.op)
            .field("cpl", &self.cpl)
            .field("payload_bytes", &self.payload().len())
            .finish_non_exhaustive()
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    #[error("record CRC mismatch at LSN {lsn}: computed {computed:#010x}, stored {stored:#010x}")]
    BadCrc {
        lsn: u64,
        computed: u32,
        stored: u32,
    },
    #[error("record LSN must be > 0, found 0")]
    ZeroLsn,
    #[error("record LSN {lsn}: backlink {prev} must be below the record's own LSN")]
    BadBacklink { lsn: u64, prev: u64 },
    #[error("record LSN {lsn}: unknown op {op}")]
    UnknownOp { lsn: u64, op: u8 },
    #[error("record LSN {lsn}: {detail}")]
    BadPayload { lsn: u64, detail: String },
}

impl Record {
    /// Builds and encodes a record whose page backlink is exact. Panics if the fields break
    /// the record's invariants: this is the writer's own data, not input.
    pub fn new(
        lsn: Lsn,
        prev_lsn_pg: Lsn,
        prev_lsn_page: Lsn,
        page: PageNo,
        op: Op,
        cpl: bool,
        payload: &[u8],
    ) -> Record {
        Record::linked(
            lsn,
            prev_lsn_pg,
            PageLink::Exact(prev_lsn_page),
            page,
            op,
            cpl,
            payload,
        )
    }

    /// [`Record::new`] with either kind of page backlink.
    pub fn linked(
        lsn: Lsn,
        prev_lsn_pg: Lsn,
        page_link: PageLink,
        page: PageNo,
        op: Op,
        cpl: bool,
        payload: &[u8],
    ) -> Record {
        assert!(payload.len() <= MAX_RECORD_PAYLOAD_BYTES);
        let prev_lsn_page = page_link.lsn();
        let mut flags = if cpl { FLAG_CPL } else { 0 };
        if matches!(page_link, PageLink::AtMost(_)) {
            flags |= FLAG_PAGE_BOUND;
        }
        let mut raw = BytesMut::with_capacity(RECORD_HEADER_BYTES + payload.len());
        raw.put_u64_le(lsn.0);
        raw.put_u64_le(prev_lsn_pg.0);
        raw.put_u64_le(prev_lsn_page.0);
        raw.put_u64_le(page.0);
        raw.put_u32_le(payload.len() as u32);
        raw.put_u8(op as u8);
        raw.put_u8(flags);
        raw.put_bytes(0, 6);
        let mut crc = crc32c::crc32c(&raw[..44]);
        crc = crc32c::crc32c_append(crc, payload);
        raw.put_u32_le(crc);
        raw.put_slice(payload);
        // The writer's own data, not input: the checks decoding would make are asserted
        // here, without computing the CRC a second time.
        assert!(lsn > Lsn::NONE, "record LSN must be > 0");
        assert!(
            prev_lsn_pg < lsn && prev_lsn_page < lsn,
            "record LSN {lsn}: backlinks {prev_lsn_pg}, {prev_lsn_page} must be below it"
        );
        if let Err(e) = op.check_payload(payload) {
            panic!("record LSN {lsn}: {e}");
        }
        let record = Record {
            lsn,
            prev_lsn_pg,
            prev_lsn_page,
            page,
            op,
            cpl,
            prev_page_bound: matches!(page_link, PageLink::AtMost(_)),
            raw: raw.freeze(),
        };
        debug_assert_eq!(
            Record::decode(&mut Reader::new(record.raw.clone(), "record")).as_ref(),
            Ok(&record)
        );
        record
    }

    /// Decodes one record from the reader, checking its CRC, LSN, backlinks and payload shape.
    /// The record keeps a zero-copy slice of the reader's buffer.
    pub fn decode(r: &mut Reader) -> Result<Record, RecordError> {
        let head = r.peek(RECORD_HEADER_BYTES)?;
        let payload_bytes = u32::from_le_bytes([head[32], head[33], head[34], head[35]]) as usize;
        if payload_bytes > MAX_RECORD_PAYLOAD_BYTES {
            return Err(DecodeError::new(
                "record",
                format!("payload of {payload_bytes} bytes exceeds the maximum of {MAX_RECORD_PAYLOAD_BYTES}"),
            )
            .into());
        }
        let raw = r.bytes(RECORD_HEADER_BYTES + payload_bytes)?;
        let mut h = Reader::new(raw.slice(..RECORD_HEADER_BYTES), "record header");
        let lsn = h.u64()?;
        let prev_lsn_pg = h.u64()?;
        let prev_lsn_page = h.u64()?;
        let page = h.u64()?;
        let _payload_bytes = h.u32()?;
        let op = h.u8()?;
        let flags = h.u8()?;
        h.zeros(6)?;
        let stored = h.u32()?;
        let payload = &raw[RECORD_HEADER_BYTES..];
        let computed = crc32c::crc32c_append(crc32c::crc32c(&raw[..44]), payload);
        if computed != stored {
            return Err(RecordError::BadCrc {
                lsn,
                computed,
                stored,
            });
        }
        if lsn == 0 {
            return Err(RecordError::ZeroLsn);
        }
        for prev in [prev_lsn_pg, prev_lsn_page] {
            if prev >= lsn {
                return Err(RecordError::BadBacklink { lsn, prev });
            }
        }
        if flags & !(FLAG_CPL | FLAG_PAGE_BOUND) != 0 {
            return Err(DecodeError::new("record", format!("unknown flags {flags:#x}")).into());
        }
        let op = Op::from_u8(op).ok_or(RecordError::UnknownOp { lsn, op })?;
        op.check_payload(payload)
            .map_err(|detail| RecordError::BadPayload { lsn, detail })?;
        Ok(Record {
            lsn: Lsn(lsn),
            prev_lsn_pg: Lsn(prev_lsn_pg),
            prev_lsn_page: Lsn(prev_lsn_page),
            page: PageNo(page),
            op,
            cpl: flags & FLAG_CPL != 0,
            prev_page_bound: flags & FLAG_PAGE_BOUND != 0,
            raw,
        })
    }

    /// The backlink to the previous record of the page.
    pub fn page_link(&self) -> PageLink {
        if self.prev_page_bound {
            PageLink::AtMost(self.prev_lsn_page)
        } else {
            PageLink::Exact(self.prev_lsn_page)
        }
    }

    /// The record's exact encoding, header and payload.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.raw.len()
    }

    pub fn payload(&self) -> &[u8] {
        &self.raw[RECORD_HEADER_BYTES..]
    }

    /// Applies this record's change to `page` (8 KiB). The payload's shape was checked at
    /// decode, so this cannot fail. The caller applies each record once, in LSN order, and
    /// only when its LSN is above the page's: `AddU64` is not idempotent.
    pub fn apply_to(&self, page: &mut [u8; PAGE_BYTES]) {
        let p = self.payload();
        let offset = || u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
        match self.op {
            Op::PageImage => page.copy_from_slice(p),
            Op::WriteBytes => {
                let at = offset();
                page[at..at + p.len() - 4].copy_from_slice(&p[4..]);
            }
            Op::AddU64 => {
                let at = offset();
                let old = u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
                let delta = u64::from_le_bytes(p[4..12].try_into().expect("8 bytes"));
                page[at..at + 8].copy_from_slice(&old.wrapping_add(delta).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ops_apply_as_documented() {
        let mut page = [0u8; PAGE_BYTES];
        let rec = |lsn, op, payload: &[u8]| {
            Record::new(Lsn(lsn), Lsn(0), Lsn(0), PageNo(1), op, false, payload)
        };
        rec(1, Op::PageImage, &[3u8; PAGE_BYTES]).apply_to(&mut page);
        assert!(page.iter().all(|b| *b == 3));
        let mut w = 8000u32.to_le_bytes().to_vec();
        w.extend(b"hexad");
        rec(2, Op::WriteBytes, &w).apply_to(&mut page);
        assert_eq!(&page[8000..8005], b"hexad");
        assert_eq!(page[8005], 3);
        let mut add = 16u32.to_le_bytes().to_vec();
        add.extend(u64::MAX.to_le_bytes());
        let r = rec(3, Op::AddU64, &add);
        r.apply_to(&mut page);
        r.apply_to(&mut page);
        // 0x0303..03 + 2 * (2^64 - 1) wraps to 0x0303..03 - 2.
        assert_eq!(
            u64::from_le_bytes(page[16..24].try_into().unwrap()),
            0x0303_0303_0303_0303 - 2
        );
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = Record> {
        (
            1u64..u64::MAX,
            any::<u64>(),
            any::<bool>(),
            prop_oneof![
                Just((Op::PageImage, vec![7u8; PAGE_BYTES])),
                (0u32..8000, proptest::collection::vec(any::<u8>(), 0..192)).prop_map(
                    |(off, data)| {
                        let mut p = off.to_le_bytes().to_vec();
                        p.extend(data);
                        (Op::WriteBytes, p)
                    }
                ),
                (0u32..8184, any::<u64>()).prop_map(|(off, d)| {
                    let mut p = off.to_le_bytes().to_vec();
                    p.extend(d.to_le_bytes());
                    (Op::AddU64, p)
                }),
            ],
        )
            .prop_map(|(lsn, page, cpl, (op, payload))| {
                let link = if lsn % 2 == 0 {
                    PageLink::Exact
                } else {
                    PageLink::AtMost
                };
                Record::linked(
                    Lsn(lsn),
                    Lsn(lsn / 2),
                    link(Lsn(lsn / 3)),
                    PageNo(page),
                    op,
                    cpl,
                    &payload,
                )
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(rec in arb_record()) {
            let back = Record::decode(&mut Reader::new(rec.raw().clone(), "record")).unwrap();
            prop_assert_eq!(back, rec);
        }

        #[test]
        fn any_flipped_bit_is_caught(rec in arb_record(), bit in 0usize..(RECORD_HEADER_BYTES * 8)) {
            let mut raw = rec.raw().to_vec();
            raw[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Record::decode(&mut Reader::new(Bytes::from(raw), "record")).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::decode(&mut Reader::new(Bytes::from(bytes), "record"));
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let ok = Record::new(
            Lsn(5),
            Lsn(4),
            Lsn(0),
            PageNo(1),
            Op::AddU64,
            true,
            &[0; 12],
        );
        let reencode = |f: &dyn Fn(&mut [u8])| {
            let mut raw = ok.raw().to_vec();
            f(&mut raw);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&raw[..44]), &raw[48..]);
            raw[44..48].copy_from_slice(&crc.to_le_bytes());
            Record::decode(&mut Reader::new(Bytes::from(raw), "record"))
        };
        assert_eq!(
            reencode(&|r| r[0..8].copy_from_slice(&0u64.to_le_bytes())),
            Err(RecordError::ZeroLsn)
        );
        assert!(matches!(
            reencode(&|r| r[8..16].copy_from_slice(&9u64.to_le_bytes())),
            Err(RecordError::BadBacklink { .. })
        ));
        assert!(matches!(
            reencode(&|r| r[36] = 99),
            Err(RecordError::UnknownOp { op: 99, .. })
        ));
        assert!(matches!(
            reencode(&|r| r[48..52].copy_from_slice(&8190u32.to_le_bytes())),
            Err(RecordError::BadPayload { .. })
        ));
    }
}
