//! Reading a socket into a connection's receive buffer, from which frames are split off
//! zero-copy ([`super::frame::take_frame`]).
//!
//! A read needs initialised memory to read into. Growing the receive buffer by a whole
//! read chunk before each read zero-fills 64 KiB per read, which costs more than the few
//! hundred bytes an ack or a small batch brings. So a read of unknown size goes into a
//! scratch buffer, zeroed once and reused (a per-thread pool: the reactor is one thread),
//! and only the bytes that came are copied into the receive buffer. A frame known to be
//! larger than a scratch buffer is read straight into the receive buffer.

use std::cell::RefCell;
use std::io;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt};

/// Bytes asked of the socket per read of unknown size.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Scratch buffers kept for reuse on a thread, at most.
const MAX_POOLED: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Reads once from `rd`, appending what came to `buf`: at least one byte, or
/// `UnexpectedEof` when the peer has closed. `want` is how many bytes the caller knows it
/// needs (0 if unknown): above [`READ_CHUNK_BYTES`] they are read straight into `buf`.
pub async fn read_more<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    let n = if want > READ_CHUNK_BYTES {
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = rd.read(&mut buf[start..]).await;
        buf.truncate(start + *n.as_ref().unwrap_or(&0));
        n?
    } else {
        let mut scratch = SCRATCH
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; READ_CHUNK_BYTES].into_boxed_slice());
        let n = rd.read(&mut scratch).await;
        if let Ok(n) = n {
            buf.extend_from_slice(&scratch[..n]);
        }
        SCRATCH.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < MAX_POOLED {
                pool.push(scratch);
            }
        });
        n?
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn small_and_large_reads_append_exactly_what_came() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut rd = futures_lite::io::Cursor::new(data.clone());
        let mut buf = BytesMut::new();
        run(async {
            read_more(&mut rd, &mut buf, 0).await.unwrap();
            assert_eq!(buf.len(), READ_CHUNK_BYTES);
            read_more(&mut rd, &mut buf, 100_000).await.unwrap();
            while buf.len() < data.len() {
                read_more(&mut rd, &mut buf, 0).await.unwrap();
            }
            assert_eq!(&buf[..], &data[..]);
            let e = read_more(&mut rd, &mut buf, 0).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        });
    }
}
