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
                p.buf.extend(data);
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
            pipe.buf.extend(data);
            pipe.closed |= closes;
        }
        wake(&p);
    })
    .detach();
}

pub(super) fn close(p: &PipeRef) {
    let latency = p.borrow().latency;
    if latency.is_zero() {
        p.borrow_mut().closed = true;
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
