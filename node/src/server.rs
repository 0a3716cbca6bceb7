//! The network shell of a shard: accepts connections and moves bytes. All decisions are in
//! [`Shard::handle`]; this module only parses frames, runs one task per request (so
//! requests pipeline and share group commits) and writes replies back as whole frames.
//!
//! ```text
//!  socket ─▶ read loop: take_frame ─▶ decode ─▶ spawn(handle) ─▶ outbox ─▶ write loop ─▶ socket
//!                       │ bad frame / bad message                    │ replies batched into
//!                       └──────────▶ Error reply, then close ────────┘ one write when queued
//! ```
//! The read loop is generic over `AsyncRead`/`AsyncWrite`: that pair is the transport seam
//! on the node side, so another network stack can drive the same loop.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpListener;
use hexad_client::wire::frame::{frame_len_hint, take_frame};
use hexad_client::wire::{
    ErrorCode, FrameHeader, Message, FRAME_HEADER_BYTES, MAX_FRAME_BODY_BYTES,
};

use crate::disk::Disk;
use crate::reply::{decode_error_reply, Reply};
use crate::shard::Shard;
use hexad_client::sync::Notify;

/// Requests of one connection being handled at once; the reader waits beyond it.
pub const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION: usize = 4096;
/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK_BYTES: usize = hexad_client::wire::recv::READ_CHUNK_BYTES;
/// Size of a connection's receive buffer allocation; frames are split off it zero-copy.
const RECV_BUFFER_BYTES: usize = 1 << 20;
/// Reply bytes buffered for a connection before request handling waits for the socket.
const MAX_OUTBOX_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Outbox {
    buf: RefCell<BytesMut>,
    wake: Notify,
    /// A reply that closes the connection has been queued.
    closing: Cell<bool>,
    /// The reader has stopped.
    done: Cell<bool>,
    requests_in_flight: Cell<usize>,
    progress: Notify,
}

impl Outbox {
    fn push(&self, request_id: u64, reply: &Reply) {
        if reply.corrupt {
            let frame = reply.message.to_frame(request_id);
            let mut body = frame[FRAME_HEADER_BYTES..].to_vec();
            if let Some(last) = body.last_mut() {
                *last ^= 0x01;
            }
            let mut buf = self.buf.borrow_mut();
            FrameHeader::write(&mut buf, reply.message.kind(), request_id, &body);
            buf.extend_from_slice(&body);
        } else {
            reply
                .message
                .encode_frame(request_id, &mut self.buf.borrow_mut());
        }
        if reply.close {
            self.closing.set(true);
        }
        self.wake.notify();
    }
}

/// Fault injection for tests and benchmarks; all off by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every reply waits this long before it is sent (each on its own, so pipelined
    /// requests overlap as on a slow link). Emulates network delay where `tc netem` is not
    /// available.
    pub reply_delay: Duration,
}

/// Accepts connections forever, one task each.
pub async fn serve<D: Disk + 'static>(shard: Rc<Shard<D>>, listener: TcpListener, faults: Faults) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                // Nagle would hold back small acks behind the previous one.
                let _ = stream.set_nodelay(true);
                let fd = stream.as_raw_fd();
                let shutdown = move || {
                    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
                };
                glommio::spawn_local(handle_connection(shard.clone(), stream, shutdown, faults))
                    .detach();
            }
            Err(e) => {
                eprintln!("hexad-node: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one connection until the peer closes it or sends something invalid.
/// `shutdown` must make a pending read return (it shuts the socket down both ways).
pub async fn handle_connection<D, S, F>(shard: Rc<Shard<D>>, stream: S, shutdown: F, faults: Faults)
where
    D: Disk + 'static,
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() + 'static,
{
    let (mut rd, wr) = futures_lite::io::split(stream);
    let out = Rc::new(Outbox::default());
    let writer = glommio::spawn_local(write_loop(wr, out.clone(), shutdown));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    'conn: loop {
        loop {
            if out.closing.get() {
                break 'conn;
            }
            match take_frame(&mut buf) {
                Ok(Some((header, body))) => match Message::decode(header.kind, body) {
                    Ok(msg) => {
                        while out.requests_in_flight.get() >= MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION
                            || out.buf.borrow().len() >= MAX_OUTBOX_BYTES
                        {
                            out.progress.notified().await;
                        }
                        out.requests_in_flight.set(out.requests_in_flight.get() + 1);
                        let (shard, out) = (shard.clone(), out.clone());
                        glommio::spawn_local(async move {
                            let reply = shard.handle(msg).await;
                            if !faults.reply_delay.is_zero() {
                                glommio::timer::sleep(faults.reply_delay).await;
                            }
                            out.push(header.request_id, &reply);
                            out.requests_in_flight.set(out.requests_in_flight.get() - 1);
                            out.progress.notify();
                        })
                        .detach();
                    }
                    Err(e) => {
                        out.push(header.request_id, &decode_error_reply(&e));
                        break 'conn;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    out.push(0, &Reply::error(ErrorCode::BadFrame, 0, e.to_string()));
                    break 'conn;
                }
            }
        }
        let want = frame_len_hint(&buf)
            .map_or(READ_CHUNK_BYTES, |n| {
                n.saturating_sub(buf.len()).max(READ_CHUNK_BYTES)
            })
            .min(MAX_FRAME_BODY_BYTES + 64);
        // When the buffer lacks room, take a large region at once (or the whole announced
        // frame): frames already split off still share the old allocation, so each regrowth
        // copies the partial frame at the tail, and `BytesMut` alone regrows in small steps.
        if buf.capacity() - buf.len() < want {
            buf.reserve(want.max(RECV_BUFFER_BYTES));
        }
        // Up to one read chunk goes through a scratch buffer (no zero-fill per read); the
        // rest of a larger announced frame is read straight into `buf`.
        if hexad_client::wire::recv::read_more(&mut rd, &mut buf, want)
            .await
            .is_err()
        {
            if !buf.is_empty() {
                // The peer may have closed only its sending side: tell it why.
                let why = format!(
                    "truncated frame: the connection closed after {} bytes of a frame",
                    buf.len()
                );
                out.push(0, &Reply::error(ErrorCode::Malformed, 0, why));
            }
            break;
        }
    }
    out.done.set(true);
    out.wake.notify();
    writer.await;
}

async fn write_loop<W: AsyncWrite + Unpin, F: Fn()>(mut wr: W, out: Rc<Outbox>, shutdown: F) {
    loop {
        while out.buf.borrow().is_empty() && !out.done.get() && !out.closing.get() {
            out.wake.notified().await;
        }
        let chunk = out.buf.borrow_mut().split().freeze();
        out.progress.notify();
        if !chunk.is_empty() && wr.write_all(&chunk).await.is_err() {
            break;
        }
        if out.closing.get() {
            let _ = wr.flush().await;
            break;
        }
        if out.done.get() && out.buf.borrow().is_empty() {
            break;
        }
    }
    shutdown();
}
