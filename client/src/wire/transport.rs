//! The seam between the protocol and a network stack.
//!
//! Frames are self-delimiting, so a transport only moves bytes: it sends whole frames in one
//! call (never a frame split across calls by the caller) and receives whatever bytes have
//! arrived into a buffer the protocol parses in place. TCP implements it below; a
//! kernel-bypass stack (DPDK, RDMA) would implement the same two methods.

use std::io::{self, Read, Write};

use bytes::BytesMut;

/// Bytes per receive call when the buffer has no room.
pub const RECV_CHUNK_BYTES: usize = 256 * 1024;

pub trait FrameTransport {
    /// Sends `frames` (one or more whole frames) in one go.
    fn send(&mut self, frames: &[u8]) -> io::Result<()>;
    /// Appends received bytes to `buf`; `Ok(0)` means the peer closed.
    fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

impl FrameTransport for std::net::TcpStream {
    fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.write_all(frames)
    }

    fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + RECV_CHUNK_BYTES, 0);
        let got = loop {
            match self.read(&mut buf[start..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got
    }
}
