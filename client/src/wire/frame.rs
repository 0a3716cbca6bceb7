//! Frame header: 32 bytes, little-endian, parsed in place from the receive buffer.
//!
//! ```text
//!  0        4      6      8              16       20       24       28       32
//!  +--------+------+------+--------------+--------+--------+--------+--------+
//!  | magic  | ver  | kind | request_id   | body   | body   | flags  | header |
//!  | "HXDF" | u16  | u16  | u64          | len u32| crc u32| u32 =0 | crc u32|
//!  +--------+------+------+--------------+--------+--------+--------+--------+
//! ```
//! `header crc` covers bytes 0..28, so a corrupted length is caught before it is trusted.

use bytes::{BufMut, Bytes, BytesMut};

use super::PROTOCOL_VERSION;

pub const FRAME_MAGIC: [u8; 4] = *b"HXDF";
pub const FRAME_HEADER_BYTES: usize = 32;
/// Hard maximum of a frame body. A peer announcing more is disconnected.
pub const MAX_FRAME_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A parsed, checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u16,
    pub request_id: u64,
    pub body_bytes: u32,
    pub body_crc: u32,
}

/// Why a byte stream is not a valid frame. All of these close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic: expected {expected:02x?}, found {found:02x?}")]
    BadMagic { expected: [u8; 4], found: [u8; 4] },
    #[error("unsupported protocol version: expected {expected}, found {found}")]
    BadVersion { expected: u16, found: u16 },
    #[error("frame header CRC mismatch: computed {computed:#010x}, header says {stored:#010x}")]
    BadHeaderCrc { computed: u32, stored: u32 },
    #[error("frame body CRC mismatch: computed {computed:#010x}, header says {stored:#010x}")]
    BadBodyCrc { computed: u32, stored: u32 },
    #[error("frame body of {found} bytes exceeds the maximum of {max}")]
    TooLarge { found: usize, max: usize },
    #[error("frame flags must be zero, found {0:#x}")]
    BadFlags(u32),
}

impl FrameHeader {
    /// Parses and checks the header at the start of `buf` (which must hold at least
    /// [`FRAME_HEADER_BYTES`]). The body is not checked here.
    pub fn parse(buf: &[u8]) -> Result<FrameHeader, FrameError> {
        assert!(buf.len() >= FRAME_HEADER_BYTES);
        let le16 = |at: usize| u16::from_le_bytes([buf[at], buf[at + 1]]);
        let le32 = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let magic = [buf[0], buf[1], buf[2], buf[3]];
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic {
                expected: FRAME_MAGIC,
                found: magic,
            });
        }
        let computed = crc32c::crc32c(&buf[..28]);
        let stored = le32(28);
        if computed != stored {
            return Err(FrameError::BadHeaderCrc { computed, stored });
        }
        let version = le16(4);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion {
                expected: PROTOCOL_VERSION,
                found: version,
            });
        }
        let flags = le32(24);
        if flags != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        let body_bytes = le32(16);
        if body_bytes as usize > MAX_FRAME_BODY_BYTES {
            return Err(FrameError::TooLarge {
                found: body_bytes as usize,
                max: MAX_FRAME_BODY_BYTES,
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&buf[8..16]);
        Ok(FrameHeader {
            kind: le16(6),
            request_id: u64::from_le_bytes(id),
            body_bytes,
            body_crc: le32(20),
        })
    }

    /// Writes a header for `body` into `out`.
    pub fn write(out: &mut BytesMut, kind: u16, request_id: u64, body: &[u8]) {
        assert!(body.len() <= MAX_FRAME_BODY_BYTES, "frame body too large");
        let start = out.len();
        out.put_slice(&FRAME_MAGIC);
        out.put_u16_le(PROTOCOL_VERSION);
        out.put_u16_le(kind);
        out.put_u64_le(request_id);
        out.put_u32_le(body.len() as u32);
        out.put_u32_le(crc32c::crc32c(body));
        out.put_u32_le(0);
        let crc = crc32c::crc32c(&out[start..start + 28]);
        out.put_u32_le(crc);
    }
}

/// Takes one complete frame off the front of `buf`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed. The returned body is a zero-copy slice
/// of the receive buffer, checked against its CRC.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<(FrameHeader, Bytes)>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let header = FrameHeader::parse(&buf[..FRAME_HEADER_BYTES])?;
    let total = FRAME_HEADER_BYTES + header.body_bytes as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let body = frame.slice(FRAME_HEADER_BYTES..);
    let computed = crc32c::crc32c(&body);
    if computed != header.body_crc {
        return Err(FrameError::BadBodyCrc {
            computed,
            stored: header.body_crc,
        });
    }
    Ok(Some((header, body)))
}

/// How many bytes the frame at the front of `buf` needs in total, once its header is in.
/// Lets a reader size its next read to exactly one frame.
pub fn frame_len_hint(buf: &[u8]) -> Option<usize> {
    if buf.len() < FRAME_HEADER_BYTES {
        return None;
    }
    FrameHeader::parse(&buf[..FRAME_HEADER_BYTES])
        .ok()
        .map(|h| FRAME_HEADER_BYTES + h.body_bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u16, id: u64, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        FrameHeader::write(&mut out, kind, id, body);
        out.put_slice(body);
        out
    }

    #[test]
    fn round_trip_and_partial() {
        let mut buf = frame(7, 42, b"hello");
        let full = buf.clone();
        let mut partial = BytesMut::from(&full[..10]);
        assert_eq!(take_frame(&mut partial), Ok(None));
        let (h, body) = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((h.kind, h.request_id, &body[..]), (7, 42, &b"hello"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_each_corruption() {
        let good = frame(1, 1, b"abc");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            take_frame(&mut bad),
            Err(FrameError::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[33] ^= 1;
        assert!(matches!(
            take_frame(&mut bad),
            Err(FrameError::BadBodyCrc { .. })
        ));
        let mut bad = good.clone();
        bad[16] = 0xff; // length, caught by the header CRC
        assert!(matches!(
            take_frame(&mut bad),
            Err(FrameError::BadHeaderCrc { .. })
        ));
    }

    proptest! {
        #[test]
        fn frames_round_trip(kind: u16, id: u64, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = frame(kind, id, &body);
            let (h, b) = take_frame(&mut buf).unwrap().unwrap();
            prop_assert_eq!(h.kind, kind);
            prop_assert_eq!(h.request_id, id);
            prop_assert_eq!(&b[..], &body[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = take_frame(&mut buf);
            let _ = frame_len_hint(&bytes);
        }
    }
}
