//! One connection from the writer to one shard of one node: boxcar sending, pipelined
//! requests, per-request timeouts, reconnect with backoff, and resend after reconnect.
//!
//! ```text
//!   ┌──────────── supervisor loop ────────────┐
//!   │ connect ─▶ Hello/HelloOk ─▶ requeue the │   requeue: every retained record of this
//!   │ retained records the node lacks ─▶ run  │   peer's segments above the node's SCL
//!   │ session ─▶ (error/timeout) ─▶ backoff ──┘
//!   session: writer: outbox ─▶ one AppendBatch per PG ─▶ one write of all frames
//!            reader: AppendAck ─▶ Volume::on_ack ─▶ quorum core
//! ```
//! Boxcar without boxcar latency: the first record into an idle outbox is sent at once;
//! records that arrive while a write is in progress ride the next write. No timer waits.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;

use super::Inner;
use crate::sync::{oneshot, Notify, Receiver, Sender};
use crate::wire::frame::take_frame;
use crate::wire::message::MAX_RECORDS_PER_BATCH;
use crate::wire::{ErrorCode, Message, Record, PROTOCOL_VERSION};
use crate::{Lsn, MembershipEpoch, NodeId, PgIndex, ShardId, VolumeEpoch, VolumeId};

/// Backoff between reconnect attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle writer checks for timed-out requests.
const TICK: Duration = Duration::from_millis(20);
/// Most record bytes in one `AppendBatch`.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Least time between two `Progress` messages on a connection, busy or idle. Each lone
/// `Progress` is a send, a request on the node and an ack back: at 2 ms on idle connections
/// they were a third of the messages of a commit with one in flight (bench/RESULTS.md,
/// issue #8). A reader learns a new VDL from the nodes within about this long.
const PROGRESS_EVERY: Duration = Duration::from_millis(10);

/// What the writer knows of one peer, for stats and errors.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub node: NodeId,
    pub shard: ShardId,
    pub addr: SocketAddr,
    pub connected: bool,
    pub acks: u64,
    /// Smoothed request → ack latency (EWMA, 1/8 weight per sample).
    pub latency_us: u64,
    pub last_error: Option<String>,
}

/// Sends of batches a session has awaiting acks before it sends the next: records queued
/// meanwhile go out together in the next send. A node writes at most two log blocks at
/// once (`hot_log.max_writes_in_flight`), so a batch sent while two are in flight waits for
/// the next block anyway; sending it later, with the records that came after it, costs
/// the node and the writer one request and one ack instead of several, and under an open
/// load (commits arriving one by one) that was most of the CPU (bench/RESULTS.md, #8).
const MAX_SENDS_IN_FLIGHT: usize = 2;

/// Requests of a session awaiting their reply.
#[derive(Default)]
struct InFlight {
    /// Request id → when it was sent, and the PG and send of a batch. Ids grow with time,
    /// so the first entry is the oldest request.
    requests: BTreeMap<u64, (Instant, Option<(PgIndex, u64)>)>,
    /// Send number → its batches not yet answered.
    sends: BTreeMap<u64, usize>,
}

impl InFlight {
    fn sent(&mut self, id: u64, at: Instant, batch: Option<(PgIndex, u64)>) {
        if let Some((_, send)) = batch {
            *self.sends.entry(send).or_default() += 1;
        }
        self.requests.insert(id, (at, batch));
    }

    /// The request `id` was answered: when it was sent and the PG of a batch.
    fn answered(&mut self, id: u64) -> Option<(Instant, Option<PgIndex>)> {
        let (at, batch) = self.requests.remove(&id)?;
        if let Some((_, send)) = batch {
            let left = self
                .sends
                .get_mut(&send)
                .expect("a send is counted until answered");
            *left -= 1;
            if *left == 0 {
                self.sends.remove(&send);
            }
        }
        Some((at, batch.map(|(pg, _)| pg)))
    }

    fn oldest(&self) -> Option<Instant> {
        self.requests.first_key_value().map(|(_, (at, _))| *at)
    }

    fn sends_full(&self) -> bool {
        self.sends.len() >= MAX_SENDS_IN_FLIGHT
    }
}

/// The reply to a request sent with [`Peer::request`]; `None` if the connection broke first.
pub(crate) type ReplyRx = Receiver<Message>;

pub(crate) struct Peer {
    pub node: NodeId,
    pub shard: ShardId,
    pub addr: SocketAddr,
    outbox: RefCell<Vec<(PgIndex, Record)>>,
    /// Other requests (page reads) waiting for the next write.
    requests: RefCell<Vec<(Message, Sender<Message>)>>,
    wake: Notify,
    connected: Cell<bool>,
    acks: Cell<u64>,
    latency_us: Cell<u64>,
    last_error: RefCell<Option<String>>,
}

impl Peer {
    pub fn new(node: NodeId, shard: ShardId, addr: SocketAddr) -> Rc<Peer> {
        Rc::new(Peer {
            node,
            shard,
            addr,
            outbox: RefCell::default(),
            requests: RefCell::default(),
            wake: Notify::default(),
            connected: Cell::new(false),
            acks: Cell::new(0),
            latency_us: Cell::new(0),
            last_error: RefCell::default(),
        })
    }

    pub fn enqueue(&self, pg: PgIndex, record: Record) {
        self.outbox.borrow_mut().push((pg, record));
        self.wake.notify();
    }

    /// Sends `msg` on this connection (once connected) and returns its reply.
    pub fn request(&self, msg: Message) -> ReplyRx {
        let (tx, rx) = oneshot();
        self.requests.borrow_mut().push((msg, tx));
        self.wake.notify();
        rx
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.get()
    }

    /// The smoothed request → reply latency (0 before the first reply).
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.get())
    }

    fn observe_latency(&self, sent: Instant) {
        let us = sent.elapsed().as_micros() as u64;
        let old = self.latency_us.get();
        self.latency_us
            .set(if old == 0 { us } else { old - old / 8 + us / 8 });
    }

    pub fn stats(&self) -> PeerStats {
        PeerStats {
            node: self.node,
            shard: self.shard,
            addr: self.addr,
            connected: self.connected.get(),
            acks: self.acks.get(),
            latency_us: self.latency_us.get(),
            last_error: self.last_error.borrow().clone(),
        }
    }

    /// Connects, serves, and reconnects until the volume is dropped.
    pub async fn run(self: Rc<Self>, volume: Weak<Inner>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(inner) = volume.upgrade() else {
                return;
            };
            let started = Instant::now();
            let acks_before = self.acks.get();
            let result = self.session(&inner).await;
            self.connected.set(false);
            drop(inner);
            if let Err(e) = result {
                *self.last_error.borrow_mut() = Some(e);
            }
            let wait;
            (wait, backoff) =
                reconnect_wait(backoff, started.elapsed(), self.acks.get() > acks_before);
            glommio::timer::sleep(wait).await;
        }
    }

    async fn session(self: &Rc<Self>, inner: &Rc<Inner>) -> Result<(), String> {
        let cfg = &inner.cfg;
        let stream = cfg
            .network
            .connect(self.addr, cfg.connect_timeout)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let (mut rd, mut wr) = futures_lite::io::split(stream);
        let hello = Message::Hello {
            protocol_version: PROTOCOL_VERSION,
        }
        .to_frame(0);
        wr.write_all(&hello)
            .await
            .map_err(|e| format!("send hello: {e}"))?;
        let mut buf = BytesMut::new();
        let reply = glommio::timer::timeout(cfg.request_timeout, async {
            read_reply(&mut rd, &mut buf)
                .await
                .map_err(glommio::GlommioError::from)
        })
        .await
        .map_err(|e| format!("hello from {}: {e}", self.addr))?;
        if !matches!(reply, Message::HelloOk { .. }) {
            return Err(format!("hello from {}: unexpected {reply:?}", self.addr));
        }
        // After a volume open, the node takes the open's truncation range for each of its
        // segments before any record of the new epoch (it would refuse them otherwise).
        let truncations = inner.truncations_for(self.node, self.shard);
        if !truncations.is_empty() {
            let mut frames = BytesMut::new();
            for (i, m) in truncations.iter().enumerate() {
                m.encode_frame(i as u64 + 1, &mut frames);
            }
            wr.write_all(&frames)
                .await
                .map_err(|e| format!("send truncations to {}: {e}", self.addr))?;
            for _ in &truncations {
                let reply = glommio::timer::timeout(cfg.request_timeout, async {
                    read_reply(&mut rd, &mut buf)
                        .await
                        .map_err(glommio::GlommioError::from)
                })
                .await
                .map_err(|e| format!("truncation reply from {}: {e}", self.addr))?;
                match reply {
                    Message::TruncateAck { .. } => {}
                    Message::Error {
                        code: ErrorCode::StaleEpoch,
                        message,
                        ..
                    } => {
                        inner.set_fenced(format!("node {}: {message}", self.node));
                        return Err(message);
                    }
                    other => return Err(format!("truncation reply from {}: {other:?}", self.addr)),
                }
            }
        }
        // A node refused a batch for a newer membership: learn it before resending.
        inner.refresh_memberships().await;
        self.connected.set(true);
        // Resend what this node may have missed while it was away (or refused).
        let missing = inner.missing_for(self.node, self.shard);
        if !missing.is_empty() {
            let mut out = self.outbox.borrow_mut();
            let queued = std::mem::take(&mut *out);
            *out = resend_order(missing, queued);
        }
        let in_flight: Rc<RefCell<InFlight>> = Rc::default();
        // Dropped with the session: waiting readers then see the connection broke.
        let waiting: Rc<RefCell<HashMap<u64, Sender<Message>>>> = Rc::default();
        let reader_done = Rc::new(Cell::new(false));
        let reader = glommio::spawn_local({
            let (peer, inner, in_flight, waiting, done) = (
                self.clone(),
                Rc::downgrade(inner),
                in_flight.clone(),
                waiting.clone(),
                reader_done.clone(),
            );
            async move {
                let r = peer
                    .read_loop(&mut rd, buf, &inner, &in_flight, &waiting)
                    .await;
                done.set(true);
                peer.wake.notify();
                r
            }
        });
        let mut next_id = 1u64;
        let mut progress_sent: Option<(Instant, Lsn, Lsn)> = None;
        let result = loop {
            if reader_done.get() {
                break Err("connection closed by the node".to_string());
            }
            let oldest = in_flight.borrow().oldest();
            if let Some(sent) = oldest {
                if sent.elapsed() > cfg.request_timeout {
                    break Err(format!(
                        "no ack from {} within {:?}",
                        self.addr, cfg.request_timeout
                    ));
                }
            }
            // Records wait while earlier sends are unanswered (MAX_SENDS_IN_FLIGHT); an ack
            // that completes a send wakes this loop.
            let batch = if in_flight.borrow().sends_full() {
                Vec::new()
            } else {
                std::mem::take(&mut *self.outbox.borrow_mut())
            };
            let mut requests = std::mem::take(&mut *self.requests.borrow_mut());
            // The writer's VDL and read point, when they moved, at most every PROGRESS_EVERY:
            // under load it rides with the batches; when idle, one goes out within
            // PROGRESS_EVERY of VDL moving (what a reader waits for).
            let (vdl, pgmrpl) = (inner.core.borrow().vdl(), inner.pgmrpl());
            let due = progress_sent
                .is_none_or(|(at, v, m)| (v, m) != (vdl, pgmrpl) && at.elapsed() >= PROGRESS_EVERY);
            if due {
                let (tx, _ignored) = oneshot();
                requests.push((inner.progress_for(self.node, self.shard), tx));
                progress_sent = Some((Instant::now(), vdl, pgmrpl));
            }
            if batch.is_empty() && requests.is_empty() {
                // Idle: wake for new work, when a held-back Progress may go, or (while acks
                // are due, which move VDL) every PROGRESS_EVERY to tell the nodes, which
                // readers ask. Not on every VDL move: that woke every connection per ack.
                let nap = match progress_sent {
                    Some((at, v, m)) if (v, m) != (vdl, pgmrpl) => {
                        PROGRESS_EVERY.saturating_sub(at.elapsed())
                    }
                    _ if !in_flight.borrow().requests.is_empty() => PROGRESS_EVERY,
                    _ => TICK,
                };
                futures_lite::future::or(self.wake.notified(), glommio::timer::sleep(nap)).await;
                continue;
            }
            let mut frames = BytesMut::new();
            let now = Instant::now();
            let send = next_id;
            for msg in batches(inner, batch) {
                msg.encode_frame(next_id, &mut frames);
                let batch = match &msg {
                    Message::AppendBatch { pg, .. } => Some((*pg, send)),
                    _ => None,
                };
                in_flight.borrow_mut().sent(next_id, now, batch);
                next_id += 1;
            }
            for (msg, reply) in requests {
                msg.encode_frame(next_id, &mut frames);
                in_flight.borrow_mut().sent(next_id, now, None);
                waiting.borrow_mut().insert(next_id, reply);
                next_id += 1;
            }
            if let Err(e) = wr.write_all(&frames).await {
                break Err(format!("send to {}: {e}", self.addr));
            }
        };
        drop(wr);
        reader.cancel().await;
        result
    }

    async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        mut buf: BytesMut,
        inner: &Weak<Inner>,
        in_flight: &RefCell<InFlight>,
        waiting: &RefCell<HashMap<u64, Sender<Message>>>,
    ) -> Result<(), String> {
        loop {
            while let Some((h, body)) = take_frame(&mut buf).map_err(|e| e.to_string())? {
                let msg = Message::decode(h.kind, body).map_err(|e| e.to_string())?;
                let (sent, was_full) = {
                    let mut f = in_flight.borrow_mut();
                    let was_full = f.sends_full();
                    (f.answered(h.request_id), was_full)
                };
                if was_full && !in_flight.borrow().sends_full() {
                    self.wake.notify();
                }
                if let Some(reply) = waiting.borrow_mut().remove(&h.request_id) {
                    if let Some((sent, _)) = sent {
                        self.observe_latency(sent);
                    }
                    let closes =
                        matches!(&msg, Message::Error { code, .. } if code.closes_connection());
                    reply.send(msg);
                    if closes {
                        return Err("node closed the connection after a request".into());
                    }
                    continue;
                }
                let Some(inner) = inner.upgrade() else {
                    return Ok(());
                };
                match msg {
                    Message::AppendAck { pg, scl, .. } => {
                        if let Some((sent, _)) = sent {
                            self.observe_latency(sent);
                        }
                        self.acks.set(self.acks.get() + 1);
                        inner.on_ack(pg, self.node, scl);
                    }
                    Message::Error {
                        code,
                        detail,
                        message,
                    } => {
                        *self.last_error.borrow_mut() = Some(format!("{code:?}: {message}"));
                        if code == ErrorCode::StaleEpoch {
                            inner.set_fenced(format!("node {}: {message}", self.node));
                        }
                        if let (ErrorCode::StaleMembership, Some((_, Some(pg)))) = (code, sent) {
                            // The PG's membership changed: reconnect, which learns it
                            // first and then resends what this node refused.
                            inner.membership_is_stale(pg, MembershipEpoch(u64::from(detail)));
                            return Err(format!("node {}: {message}", self.node));
                        }
                        if code == ErrorCode::TruncationNeeded {
                            // A PG new to this connection: reconnect, which sends the
                            // truncation range of every PG first, then resends.
                            return Err(format!("node {}: {message}", self.node));
                        }
                        if code.closes_connection() {
                            return Err(format!("node closed the connection: {code:?}: {message}"));
                        }
                    }
                    other => return Err(format!("unexpected reply {other:?}")),
                }
            }
            read_more(rd, &mut buf).await.map_err(|e| e.to_string())?;
        }
    }
}

/// How long to wait before reconnecting after a session that lasted `lasted` (and got
/// acks or not), given the backoff so far; returns the wait and the next backoff. A
/// session that got acks reached a working node: its end (a reset, a node restart) is no
/// reason to wait long. Backing off only after sessions shorter than `BACKOFF_MAX` kept
/// every peer ~1 s away while links reset every ~100 ms, and the writer stalled (the
/// cluster simulation, seeds 24, 46 and 72 of its random plan).
fn reconnect_wait(backoff: Duration, lasted: Duration, got_acks: bool) -> (Duration, Duration) {
    let wait = if got_acks || lasted > BACKOFF_MAX {
        BACKOFF_MIN
    } else {
        backoff
    };
    (wait, (wait * 2).min(BACKOFF_MAX))
}

/// What a (re)connected session sends first: the retained records the node lacks and the
/// records queued meanwhile, in LSN order and each once. Most queued records are among the
/// missing ones; sent twice, they would put a batch back in LSN, which the node refuses
/// (`InvalidLsn`) and answers by closing the connection, and under continuous load into
/// one PG every reconnect would do the same again: no ack until the load stopped.
fn resend_order(
    missing: Vec<(PgIndex, Record)>,
    queued: Vec<(PgIndex, Record)>,
) -> Vec<(PgIndex, Record)> {
    let all: BTreeMap<Lsn, (PgIndex, Record)> = missing
        .into_iter()
        .chain(queued)
        .map(|(pg, r)| (r.lsn, (pg, r)))
        .collect();
    all.into_values().collect()
}

/// Groups queued records into `AppendBatch` messages, one open batch per PG
/// ([`append_batches`]).
fn batches(inner: &Inner, queued: Vec<(PgIndex, Record)>) -> Vec<Message> {
    append_batches(inner.cfg.volume, inner.recovered.epoch, queued, |pg| {
        inner.members_of(pg).epoch
    })
}

/// Groups records into `AppendBatch` messages of `epoch`, each with its PG's membership
/// epoch: every PG's records in the order given (LSN order), up to the batch limits
/// (count and `MAX_BATCH_BYTES`). Records of different PGs interleave in the queue (a
/// writer's pages spread over its PGs), so each PG keeps its own open batch: grouping
/// only consecutive records sent one record per request (bench/RESULTS.md, issue #8).
/// Also used by volume open to re-replicate.
pub(super) fn append_batches(
    volume: VolumeId,
    epoch: VolumeEpoch,
    queued: impl IntoIterator<Item = (PgIndex, Record)>,
    membership_epoch: impl Fn(PgIndex) -> MembershipEpoch,
) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    // Each PG's open batch: its index in `out` and its record bytes so far. A writer
    // sends to a few PGs per connection, so a scan beats a map.
    let mut open: Vec<(PgIndex, usize, usize)> = Vec::new();
    for (pg, record) in queued {
        let len = record.encoded_len();
        let slot = open.iter().position(|(p, _, _)| *p == pg);
        let fits = slot.is_some_and(|i| {
            let (_, at, bytes) = open[i];
            matches!(&out[at], Message::AppendBatch { records, .. }
                if records.len() < MAX_RECORDS_PER_BATCH && bytes + len <= MAX_BATCH_BYTES)
        });
        if !fits {
            out.push(Message::AppendBatch {
                volume,
                pg,
                volume_epoch: epoch,
                membership_epoch: membership_epoch(pg),
                records: Vec::new(),
            });
            let batch = (pg, out.len() - 1, 0);
            match slot {
                Some(i) => open[i] = batch,
                None => open.push(batch),
            }
        }
        let i = slot.unwrap_or(open.len() - 1);
        open[i].2 += len;
        if let Some(Message::AppendBatch { records, .. }) = out.get_mut(open[i].1) {
            records.push(record);
        }
    }
    out
}

/// Reads until one whole frame is in `buf` and decodes it.
async fn read_reply<R: futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Message> {
    loop {
        if let Some((h, body)) = take_frame(buf).map_err(io_other)? {
            return Message::decode(h.kind, body).map_err(io_other);
        }
        read_more(rd, buf).await?;
    }
}

/// Reads what the node sent next into `buf` ([`crate::wire::recv::read_more`]).
pub(super) async fn read_more<R: futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    crate::wire::recv::read_more(rd, buf, 0).await.map(|_| ())
}

fn io_other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PageNo;
    use crate::wire::Op;

    #[test]
    fn a_session_that_got_acks_resets_the_backoff() {
        let short = Duration::from_millis(120);
        // Sessions that fail at once back off: 10, 20, 40 ms, … up to BACKOFF_MAX.
        let mut backoff = BACKOFF_MIN;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let wait;
            (wait, backoff) = reconnect_wait(backoff, Duration::ZERO, false);
            waits.push(wait);
        }
        assert_eq!(waits[..3], [BACKOFF_MIN, BACKOFF_MIN * 2, BACKOFF_MIN * 4]);
        assert_eq!(waits[9], BACKOFF_MAX);
        // Under churn (every session ~120 ms, each with acks) the wait stays short.
        for _ in 0..10 {
            let wait;
            (wait, backoff) = reconnect_wait(backoff, short, true);
            assert_eq!(wait, BACKOFF_MIN);
        }
        // A long session without acks resets it too; a short one without acks does not.
        assert_eq!(
            reconnect_wait(BACKOFF_MAX, BACKOFF_MAX * 2, false).0,
            BACKOFF_MIN
        );
        assert_eq!(reconnect_wait(BACKOFF_MAX, short, false).0, BACKOFF_MAX);
    }

    /// A send counts until every batch in it is answered; other requests never count.
    #[test]
    fn sends_in_flight_count_until_their_last_batch_is_answered() {
        let now = Instant::now();
        let mut f = InFlight::default();
        // Send 1: batches 1 and 2 (two PGs) and a Progress (3); send 4: one batch.
        f.sent(1, now, Some((PgIndex(0), 1)));
        f.sent(2, now, Some((PgIndex(1), 1)));
        f.sent(3, now, None);
        assert!(!f.sends_full());
        f.sent(4, now, Some((PgIndex(0), 4)));
        assert!(f.sends_full());
        assert_eq!(f.answered(3).map(|(_, pg)| pg), Some(None));
        assert_eq!(f.answered(1).map(|(_, pg)| pg), Some(Some(PgIndex(0))));
        assert!(f.sends_full(), "send 1 still has batch 2 unanswered");
        assert!(f.answered(2).is_some());
        assert!(!f.sends_full());
        assert!(f.answered(2).is_none(), "answered once");
        assert!(f.answered(4).is_some());
        assert!(f.sends.is_empty() && f.requests.is_empty());
    }

    fn rec(lsn: u64) -> (PgIndex, Record) {
        let r = Record::new(
            Lsn(lsn),
            Lsn(lsn - 1),
            Lsn::NONE,
            PageNo(lsn % 7),
            Op::WriteBytes,
            true,
            &[0, 0, 0, 0, 1],
        );
        (PgIndex(0), r)
    }

    #[test]
    fn a_resend_merges_with_what_was_queued_so_every_batch_goes_forward() {
        let missing = (3..=8).map(rec).collect();
        let queued = (6..=10).map(rec).collect();
        let out = resend_order(missing, queued);
        let lsns: Vec<u64> = out.iter().map(|(_, r)| r.lsn.0).collect();
        assert_eq!(lsns, (3..=10).collect::<Vec<_>>());
        for m in append_batches(VolumeId(1), VolumeEpoch(1), out, |_| MembershipEpoch(1)) {
            let Message::AppendBatch { records, .. } = m else {
                unreachable!()
            };
            assert!(records.windows(2).all(|w| w[0].lsn < w[1].lsn));
        }
    }

    #[test]
    fn interleaved_pgs_share_one_batch_each_in_lsn_order() {
        let queued: Vec<(PgIndex, Record)> = (1..=9)
            .map(|lsn| (PgIndex((lsn % 3) as u32), rec(lsn).1))
            .collect();
        let out = append_batches(VolumeId(1), VolumeEpoch(1), queued, |_| MembershipEpoch(1));
        let got: Vec<(u32, Vec<u64>)> = out
            .iter()
            .map(|m| match m {
                Message::AppendBatch { pg, records, .. } => {
                    (pg.0, records.iter().map(|r| r.lsn.0).collect())
                }
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            got,
            vec![(1, vec![1, 4, 7]), (2, vec![2, 5, 8]), (0, vec![3, 6, 9])]
        );
    }

    #[test]
    fn a_full_batch_starts_the_next_one_for_its_pg() {
        let record_bytes = rec(1).1.encoded_len();
        let per_batch = MAX_RECORDS_PER_BATCH.min(MAX_BATCH_BYTES / record_bytes);
        let queued: Vec<(PgIndex, Record)> = (1..=(2 * per_batch as u64 + 2))
            .map(|lsn| (PgIndex((lsn % 2) as u32), rec(lsn).1))
            .collect();
        let out = append_batches(VolumeId(1), VolumeEpoch(1), queued, |_| MembershipEpoch(1));
        let mut last = std::collections::HashMap::<u32, u64>::new();
        let mut sizes: Vec<(u32, usize)> = Vec::new();
        for m in &out {
            let Message::AppendBatch { pg, records, .. } = m else {
                unreachable!()
            };
            let bytes: usize = records.iter().map(Record::encoded_len).sum();
            assert!(records.len() <= MAX_RECORDS_PER_BATCH && bytes <= MAX_BATCH_BYTES);
            for r in records {
                let prev = last.insert(pg.0, r.lsn.0).unwrap_or(0);
                assert!(
                    r.lsn.0 > prev,
                    "pg {} went back to {} after {prev}",
                    pg.0,
                    r.lsn.0
                );
            }
            sizes.push((pg.0, records.len()));
        }
        // Each PG: one full batch, then the one record over.
        assert_eq!(sizes, vec![(1, per_batch), (0, per_batch), (1, 1), (0, 1)]);
    }
}
