//! A pipelined connection to one shard that any task of the executor may call at once:
//! each call queues its frame, one writer task sends whatever is queued in one write, and
//! one reader task hands each reply to its caller by request id. Replies may come in any
//! order. Used where a caller wants many requests in flight on one connection without the
//! write path's machinery (the bench's node target; later, node-to-node requests).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::net::{BoxConn, Network};
use bytes::BytesMut;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;

use super::peer::read_more;
use crate::sync::{oneshot, Notify, Sender};
use crate::wire::frame::take_frame;
use crate::wire::{Message, PROTOCOL_VERSION};

type Reply = Result<Message, String>;

struct Shared {
    addr: SocketAddr,
    next_id: Cell<u64>,
    /// Encoded frames not yet written.
    outbox: RefCell<BytesMut>,
    queued: Notify,
    /// Callers waiting for a reply, by request id.
    waiting: RefCell<HashMap<u64, Sender<Reply>>>,
    /// Why the connection failed; every later call fails with it.
    broken: RefCell<Option<String>>,
}

impl Shared {
    /// Marks the connection failed and fails every waiting call.
    fn fail(&self, why: &str) {
        if self.broken.borrow().is_none() {
            *self.broken.borrow_mut() = Some(why.to_string());
        }
        for (_, tx) in self.waiting.borrow_mut().drain() {
            tx.send(Err(why.to_string()));
        }
        self.queued.notify();
    }
}

pub struct Pipelined {
    shared: Rc<Shared>,
    timeout: Duration,
    /// The writer and reader tasks; dropping the connection cancels them.
    tasks: Vec<glommio::Task<()>>,
}

impl Pipelined {
    /// Connects and shakes hands; every later call must be answered within `timeout`.
    pub async fn connect(
        network: &Network,
        addr: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Pipelined, String> {
        let stream = network
            .connect(addr, connect_timeout)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (rd, wr) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared {
            addr,
            next_id: Cell::new(1),
            outbox: RefCell::default(),
            queued: Notify::default(),
            waiting: RefCell::default(),
            broken: RefCell::default(),
        });
        let tasks = vec![
            glommio::spawn_local(write_loop(shared.clone(), wr)),
            glommio::spawn_local(read_loop(shared.clone(), rd)),
        ];
        let conn = Pipelined {
            shared,
            timeout,
            tasks,
        };
        match conn
            .call(Message::Hello {
                protocol_version: PROTOCOL_VERSION,
            })
            .await?
        {
            Message::HelloOk { .. } => Ok(conn),
            other => Err(format!("hello from {addr}: unexpected {other:?}")),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Sends `msg` and waits for its reply. An `Error` reply is returned like any other;
    /// `Err` means the connection failed or the reply took longer than the timeout (the
    /// connection is then unusable: a late reply could not be told from a current one).
    pub async fn call(&self, msg: Message) -> Reply {
        let s = &self.shared;
        if let Some(why) = s.broken.borrow().clone() {
            return Err(why);
        }
        let id = s.next_id.get();
        s.next_id.set(id + 1);
        let (tx, rx) = oneshot();
        s.waiting.borrow_mut().insert(id, tx);
        msg.encode_frame(id, &mut s.outbox.borrow_mut());
        s.queued.notify();
        match glommio::timer::timeout(self.timeout, async { Ok(rx.await) }).await {
            Ok(Some(reply)) => reply,
            Ok(None) => Err(format!("{}: connection closed", s.addr)),
            Err(_) => {
                let why = format!("no reply from {} within {:?}", s.addr, self.timeout);
                s.fail(&why);
                Err(why)
            }
        }
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        self.shared
            .fail(&format!("{}: connection dropped", self.shared.addr));
        // Dropping a glommio task cancels it.
        self.tasks.clear();
    }
}

async fn write_loop(s: Rc<Shared>, mut wr: WriteHalf<BoxConn>) {
    loop {
        let frames = std::mem::take(&mut *s.outbox.borrow_mut());
        if s.broken.borrow().is_some() {
            return;
        }
        if frames.is_empty() {
            s.queued.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&frames).await {
            s.fail(&format!("send to {}: {e}", s.addr));
            return;
        }
    }
}

async fn read_loop(s: Rc<Shared>, mut rd: ReadHalf<BoxConn>) {
    let mut buf = BytesMut::new();
    loop {
        let frame = match take_frame(&mut buf) {
            Ok(f) => f,
            Err(e) => return s.fail(&format!("{}: {e}", s.addr)),
        };
        let Some((h, body)) = frame else {
            if let Err(e) = read_more(&mut rd, &mut buf).await {
                return s.fail(&format!("{}: {e}", s.addr));
            }
            continue;
        };
        let reply = Message::decode(h.kind, body).map_err(|e| format!("{}: {e}", s.addr));
        let waiter = s.waiting.borrow_mut().remove(&h.request_id);
        match waiter {
            Some(tx) => tx.send(reply),
            None => {
                return s.fail(&format!(
                    "{}: reply to unknown request {}",
                    s.addr, h.request_id
                ))
            }
        }
    }
}
