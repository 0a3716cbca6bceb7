//! The simulated network: in-memory byte pipes, one pair per connection, that a fault can
//! reset, delay or (in a partition) hold back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

/// One direction of a connection.
#[derive(Default)]
pub(super) struct Pipe {
    pub(super) buf: VecDeque<u8>,
    /// The writing side closed: reads drain, then see end of stream.
    pub(super) closed: bool,
    /// The link was reset: both sides fail at once.
    pub(super) reset: bool,
    pub(super) reader: Option<Waker>,
    /// Bytes (and the close) reach the reader this long after they are written, in order.
    pub(super) latency: Duration,
    /// The sending and the receiving host (0: a writer; N: node N).
    pub(super) from: u32,
    pub(super) to: u32,
    /// While a partition cuts this direction, what arrives is held here (TCP would
    /// retransmit it) and delivered, in order, when the partition heals.
    cut: Option<Held>,
}

/// What a cut direction holds back: bytes, and whether the sender closed after them.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    closes: bool,
}

impl Pipe {
    pub(super) fn new(from: u32, to: u32, latency: Duration) -> PipeRef {
        Rc::new(RefCell::new(Pipe {
            latency,
            from,
            to,
            ..Pipe::default()
        }))
    }

    /// Bytes (and perhaps the close) reach the far end now, or wait for the heal.
    fn arrive(&mut self, data: &[u8], closes: bool) {
        if let Some(held) = self.cut.as_mut() {
            held.bytes.extend_from_slice(data);
            held.closes |= closes;
        } else {
            self.buf.extend(data);
            self.closed |= closes;
        }
    }

    /// A partition cuts this direction (`true`) or no longer does: what it held arrives.
    pub(super) fn set_cut(&mut self, cut: bool) {
        match (cut, self.cut.take()) {
            (true, held) => self.cut = Some(held.unwrap_or_default()),
            (false, Some(held)) => {
                self.buf.extend(held.bytes);
                self.closed |= held.closes;
            }
            (false, None) => {}
        }
    }
}

pub(super) type PipeRef = Rc<RefCell<Pipe>>;

/// One side of a link: reads from `rx`, writes to `tx`.
pub(super) struct End {
    pub(super) rx: PipeRef,
    pub(super) tx: PipeRef,
}

pub(super) fn wake(p: &PipeRef) {
    if let Some(w) = p.borrow_mut().reader.take() {
        w.wake();
    }
}

pub(super) fn reset_link(a: &PipeRef, b: &PipeRef) {
    for p in [a, b] {
        p.borrow_mut().reset = true;
        wake(p);
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.rx.borrow_mut();
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if !p.buf.is_empty() {
            let n = out.len().min(p.buf.len());
            for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
                *o = b;
            }
            return Poll::Ready(Ok(n));
        }
        if p.closed {
            return Poll::Ready(Ok(0));
        }
        p.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let latency = {
            let mut p = self.tx.borrow_mut();
            if p.reset || p.closed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if p.latency.is_zero() {
                p.arrive(data, false);
            }
            p.latency
        };
        if latency.is_zero() {
            wake(&self.tx);
        } else {
            deliver_later(&self.tx, latency, data.to_vec(), false);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        close(&self.tx);
        Poll::Ready(Ok(()))
    }
}

/// Delivers `data` (or the close) after `latency`: timers of one duration fire in the
/// order they were set, so a link stays in order.
pub(super) fn deliver_later(p: &PipeRef, latency: Duration, data: Vec<u8>, closes: bool) {
    let p = p.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(latency).await;
        {
            let mut pipe = p.borrow_mut();
            if pipe.reset {
                return;
            }
            pipe.arrive(&data, closes);
        }
        wake(&p);
    })
    .detach();
}

pub(super) fn close(p: &PipeRef) {
    let latency = p.borrow().latency;
    if latency.is_zero() {
        p.borrow_mut().arrive(&[], true);
        wake(p);
    } else {
        deliver_later(p, latency, Vec::new(), true);
    }
}

impl Drop for End {
    fn drop(&mut self) {
        close(&self.tx);
    }
}
