//! Little-endian cursor over received bytes: every read is bounds-checked and returns an
//! error naming what was expected, so decoding arbitrary bytes never panics.

use bytes::Bytes;

/// A decoding failure: what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

impl DecodeError {
    pub fn new(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError {
            what,
            detail: detail.into(),
        }
    }
}

/// Reads fixed-width little-endian fields from a `Bytes` body without copying payloads.
pub struct Reader {
    buf: Bytes,
    pos: usize,
    what: &'static str,
}

impl Reader {
    pub fn new(buf: Bytes, what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.short(N));
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    fn short(&self, wanted: usize) -> DecodeError {
        DecodeError::new(
            self.what,
            format!(
                "needed {wanted} more bytes at offset {}, found {}",
                self.pos,
                self.remaining()
            ),
        )
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take_array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Skips `n` reserved bytes, which must be zero.
    pub fn zeros(&mut self, n: usize) -> Result<(), DecodeError> {
        let at = self.pos;
        let bytes = self.bytes(n)?;
        if bytes.iter().any(|&b| b != 0) {
            return Err(DecodeError::new(
                self.what,
                format!("reserved bytes at offset {at} must be zero"),
            ));
        }
        Ok(())
    }

    /// The next `n` bytes as a zero-copy slice of the body.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.short(n));
        };
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::new(
                self.what,
                format!("{} trailing bytes", self.remaining()),
            ))
        }
    }
}

impl Reader {
    /// The next `n` bytes without consuming them.
    pub fn peek(&self, n: usize) -> Result<&[u8], DecodeError> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => Ok(&self.buf[self.pos..end]),
            None => Err(self.short(n)),
        }
    }
}
