//! A plain request/reply connection to one shard, for volume open and reads: Hello, then
//! pipelined requests whose replies are matched by request id. (The write path uses
//! [`super::peer::Peer`], which streams batches instead.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::net::{BoxConn, Network};
use bytes::BytesMut;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;

use super::peer::read_more;
use crate::wire::frame::take_frame;
use crate::wire::{Message, PROTOCOL_VERSION};

pub(crate) struct Rpc {
    pub addr: SocketAddr,
    rd: ReadHalf<BoxConn>,
    wr: WriteHalf<BoxConn>,
    buf: BytesMut,
    next_id: u64,
    timeout: Duration,
}

impl Rpc {
    /// Connects and shakes hands; every later call must be answered within `timeout`.
    pub async fn connect(
        network: &Network,
        addr: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Rpc, String> {
        let stream = network
            .connect(addr, connect_timeout)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (rd, wr) = futures_lite::io::split(stream);
        let mut rpc = Rpc {
            addr,
            rd,
            wr,
            buf: BytesMut::new(),
            next_id: 1,
            timeout,
        };
        let reply = rpc
            .call(Message::Hello {
                protocol_version: PROTOCOL_VERSION,
            })
            .await?;
        match reply {
            Message::HelloOk { .. } => Ok(rpc),
            other => Err(format!("hello from {addr}: unexpected {other:?}")),
        }
    }

    pub async fn call(&mut self, msg: Message) -> Result<Message, String> {
        let mut replies = self.call_all(vec![msg]).await?;
        Ok(replies.remove(0))
    }

    /// Sends every request in one write and returns the replies in request order. An
    /// `Error` reply is returned like any other; only transport failures are `Err`.
    pub async fn call_all(&mut self, msgs: Vec<Message>) -> Result<Vec<Message>, String> {
        let first = self.next_id;
        let mut frames = BytesMut::new();
        for m in &msgs {
            m.encode_frame(self.next_id, &mut frames);
            self.next_id += 1;
        }
        let addr = self.addr;
        let timeout = self.timeout;
        let work = async {
            self.wr
                .write_all(&frames)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut got: HashMap<u64, Message> = HashMap::with_capacity(msgs.len());
            while got.len() < msgs.len() {
                match take_frame(&mut self.buf).map_err(|e| format!("{addr}: {e}"))? {
                    Some((h, body)) => {
                        let m =
                            Message::decode(h.kind, body).map_err(|e| format!("{addr}: {e}"))?;
                        if h.request_id < first || h.request_id >= self.next_id {
                            return Err(format!(
                                "{addr}: reply to unknown request {}",
                                h.request_id
                            ));
                        }
                        got.insert(h.request_id, m);
                    }
                    None => read_more(&mut self.rd, &mut self.buf)
                        .await
                        .map_err(|e| format!("{addr}: {e}"))?,
                }
            }
            Ok((first..self.next_id)
                .map(|id| got.remove(&id).expect("every reply arrived"))
                .collect())
        };
        glommio::timer::timeout(timeout, async {
            work.await
                .map_err(|e: String| glommio::GlommioError::from(std::io::Error::other(e)))
        })
        .await
        .map_err(|e| match e {
            glommio::GlommioError::TimedOut(_) => {
                format!("no reply from {addr} within {timeout:?}")
            }
            other => other.to_string(),
        })
    }
}

/// Idle connections by address, for callers that need several requests in flight to one
/// shard (each takes its own connection); also each node's smoothed reply latency.
pub(crate) struct RpcPool {
    idle: std::cell::RefCell<HashMap<SocketAddr, Vec<Rpc>>>,
    latency: std::cell::RefCell<HashMap<crate::NodeId, Duration>>,
    network: Network,
    connect_timeout: Duration,
    timeout: Duration,
}

impl RpcPool {
    pub fn new(network: Network, connect_timeout: Duration, timeout: Duration) -> RpcPool {
        RpcPool {
            idle: std::cell::RefCell::default(),
            latency: std::cell::RefCell::default(),
            network,
            connect_timeout,
            timeout,
        }
    }

    /// Sends one request to `node` at `addr` and returns the reply; the connection goes
    /// back to the pool unless it failed.
    pub async fn call(
        &self,
        node: crate::NodeId,
        addr: SocketAddr,
        msg: Message,
    ) -> Result<Message, String> {
        let idle = self.idle.borrow_mut().get_mut(&addr).and_then(Vec::pop);
        let mut rpc = match idle {
            Some(rpc) => rpc,
            None => Rpc::connect(&self.network, addr, self.connect_timeout, self.timeout).await?,
        };
        let started = std::time::Instant::now();
        let reply = rpc.call(msg).await?;
        let took = started.elapsed();
        let mut lat = self.latency.borrow_mut();
        let l = lat.entry(node).or_insert(took);
        *l = (*l * 7 + took) / 8;
        drop(lat);
        self.idle.borrow_mut().entry(addr).or_default().push(rpc);
        Ok(reply)
    }

    /// Every record of `pg` in `(after, to]` that `node` holds, in LSN order (following
    /// `more` across replies).
    pub async fn fetch_all(
        &self,
        node: crate::NodeId,
        addr: SocketAddr,
        volume: crate::VolumeId,
        pg: crate::PgIndex,
        after: crate::Lsn,
        to: crate::Lsn,
    ) -> Result<Vec<crate::wire::Record>, String> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let request = Message::FetchRecords {
                volume,
                pg,
                after_lsn: after,
                to_lsn: to,
                max_bytes: 4 << 20,
            };
            let Message::Records { more, records, .. } = self.call(node, addr, request).await?
            else {
                return Err(format!("{addr}: not a Records reply"));
            };
            let last = records.last().map(|r| r.lsn);
            out.extend(records);
            match (more, last) {
                (true, Some(last)) => after = last,
                _ => return Ok(out),
            }
        }
    }

    /// The node's smoothed latency, if it has answered before.
    pub fn latency(&self, node: crate::NodeId) -> Option<Duration> {
        self.latency.borrow().get(&node).copied()
    }
}
