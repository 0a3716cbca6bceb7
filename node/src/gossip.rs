//! Gossip (DESIGN §8): a shard's segments fill their holes from their PG's other members,
//! without the writer.
//!
//! Every [`GOSSIP_EVERY`], in the low-priority task queue, each segment (up to
//! [`SEGMENTS_PER_ROUND`] a round, in turn) asks its 5 peers for their state
//! (`GetSegmentState`). If one has a higher SCL and a membership epoch at least its own,
//! it pulls the records above its own SCL up to that peer's (`PullRecords`, carrying its
//! membership epoch, which the peer checks), [`PULL_BYTES`] per request, keeps those it
//! does not hold, and appends them to its hot log; the SCL then moves as for a writer's
//! batch. A segment learns of a hole only as "my SCL is below a peer's": the records it
//! holds above its SCL stay, and the pull fills the chain between them.
//!
//! Pulled records go into the log with volume epoch 0. Records of a truncation range are
//! only ever of epochs older than the range's (each open's writer allocates above its own
//! range), so the lowest epoch is annulled by exactly the ranges that annul the record's
//! true epoch, and never by others.
//!
//! Not built yet (issue #6): a pull below a peer's floor (`TooOld`) needs a page baseline
//! (segment rebuild); it is logged and retried later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hexad_client::placement::{segment_shard, ClusterMap};
use hexad_client::volume::Pipelined;
use hexad_client::wire::{ErrorCode, Message, Record};
use hexad_client::{Lsn, MembershipEpoch, NodeId, VolumeEpoch};

use crate::disk::Disk;
use crate::hotlog::format::{Entry, SegmentKey};
use crate::segment::Segment;
use crate::shard::{Reply, Shard};

/// How often each segment compares its SCL with its peers'.
pub const GOSSIP_EVERY: Duration = Duration::from_millis(200);
/// Segments that gossip per round (the rest wait their turn).
const SEGMENTS_PER_ROUND: usize = 32;
/// Bytes of records one pull asks for.
const PULL_BYTES: u32 = 1 << 20;
/// Connect and request timeout towards a peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer's segment as it answered.
struct PeerState {
    addr: SocketAddr,
    scl: Lsn,
}

impl<D: Disk + 'static> Shard<D> {
    /// The serving side (`PullRecords`): `FetchRecords`, unless this segment knows a newer
    /// membership epoch than the puller's.
    pub(crate) async fn pull_records(
        &self,
        key: SegmentKey,
        membership_epoch: MembershipEpoch,
        after: Lsn,
        to: Lsn,
        max_bytes: u32,
    ) -> Reply {
        let mine = self.segments.borrow().get(&key).map(|s| s.membership_epoch);
        if let Some(mine) = mine.filter(|m| *m > membership_epoch) {
            return Reply::error(
                ErrorCode::StaleEpoch,
                0,
                format!(
                    "volume {} pg {}: gossip from membership epoch {membership_epoch}, this segment is at {mine}",
                    key.volume, key.pg
                ),
            );
        }
        self.fetch(key, after, to, max_bytes).await
    }

    /// Gossips forever (spawn it into a low-priority task queue).
    pub async fn run_gossip(self: Rc<Self>, cluster: ClusterMap) {
        let mut conns: HashMap<SocketAddr, Rc<Pipelined>> = HashMap::new();
        let mut turn = 0usize;
        loop {
            glommio::timer::sleep(GOSSIP_EVERY).await;
            let keys: Vec<SegmentKey> = self.segments.borrow().keys().copied().collect();
            if keys.is_empty() {
                continue;
            }
            for i in 0..keys.len().min(SEGMENTS_PER_ROUND) {
                let key = keys[(turn + i) % keys.len()];
                if let Err(e) = self.gossip_segment(&cluster, &mut conns, key).await {
                    eprintln!(
                        "hexad-node: gossip for volume {} pg {}: {e}",
                        key.volume, key.pg
                    );
                }
            }
            turn = turn.wrapping_add(SEGMENTS_PER_ROUND);
        }
    }

    /// One segment: find the peer with the highest SCL and pull up to it.
    async fn gossip_segment(
        &self,
        cluster: &ClusterMap,
        conns: &mut HashMap<SocketAddr, Rc<Pipelined>>,
        key: SegmentKey,
    ) -> Result<(), String> {
        let Some((scl, epoch)) = self
            .segments
            .borrow()
            .get(&key)
            .map(|s| (s.scl(), s.membership_epoch))
        else {
            return Ok(());
        };
        let me = self.id.node_id;
        let mut best: Option<PeerState> = None;
        for node in cluster.pg_members(key.volume, key.pg) {
            if node == me {
                continue;
            }
            let Some(addr) = peer_addr(cluster, node, key) else {
                continue;
            };
            let reply = match conn(conns, addr).await {
                Ok(c) => {
                    c.call(Message::GetSegmentState {
                        volume: key.volume,
                        pg: key.pg,
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match reply {
                Ok(Message::SegmentState {
                    scl: theirs,
                    membership_epoch,
                    ..
                }) if membership_epoch >= epoch
                    && theirs > best.as_ref().map_or(scl, |b| b.scl) =>
                {
                    best = Some(PeerState { addr, scl: theirs });
                }
                Ok(_) => {}
                Err(_) => {
                    conns.remove(&addr); // reconnect next round
                }
            }
        }
        let Some(peer) = best else {
            return Ok(());
        };
        self.pull(conns, key, epoch, &peer).await
    }

    /// Pulls `(own SCL, peer SCL]` from `peer`, a megabyte at a time, until the SCL
    /// reaches the peer's or stops moving.
    async fn pull(
        &self,
        conns: &mut HashMap<SocketAddr, Rc<Pipelined>>,
        key: SegmentKey,
        epoch: MembershipEpoch,
        peer: &PeerState,
    ) -> Result<(), String> {
        let c = conn(conns, peer.addr).await?;
        loop {
            let after = self
                .segments
                .borrow()
                .get(&key)
                .map_or(Lsn::NONE, Segment::scl);
            if after >= peer.scl {
                return Ok(());
            }
            let reply = c
                .call(Message::PullRecords {
                    volume: key.volume,
                    pg: key.pg,
                    membership_epoch: epoch,
                    after_lsn: after,
                    to_lsn: peer.scl,
                    max_bytes: PULL_BYTES,
                })
                .await;
            let records = match reply {
                Ok(Message::Records { records, .. }) => records,
                Ok(Message::Error {
                    code: ErrorCode::TooOld,
                    message,
                    ..
                }) => {
                    return Err(format!(
                        "{}: the records after LSN {after} are below its floor; this segment needs a page baseline from a peer (segment rebuild, not built yet): {message}",
                        peer.addr
                    ))
                }
                Ok(other) => return Err(format!("{}: {other:?}", peer.addr)),
                Err(e) => {
                    conns.remove(&peer.addr);
                    return Err(format!("{}: {e}", peer.addr));
                }
            };
            self.append_pulled(key, records).await?;
            let now = self
                .segments
                .borrow()
                .get(&key)
                .map_or(Lsn::NONE, Segment::scl);
            if now <= after {
                return Err(format!(
                    "pulled from {} after LSN {after} and the SCL did not move (the peer's chain has a hole of its own there?)",
                    peer.addr
                ));
            }
        }
    }

    /// Appends the pulled records this segment does not hold yet to the hot log (epoch 0,
    /// see the module comment); they join the segment once durable.
    async fn append_pulled(&self, key: SegmentKey, records: Vec<Record>) -> Result<(), String> {
        let (fresh, membership_epoch): (Vec<Record>, MembershipEpoch) = {
            let segs = self.segments.borrow();
            let Some(seg) = segs.get(&key) else {
                return Ok(());
            };
            let fresh = records
                .into_iter()
                .filter(|r| r.lsn > seg.floor() && !seg.holds(r.lsn) && key.pg.contains(r.page))
                .collect();
            (fresh, seg.membership_epoch)
        };
        if fresh.is_empty() {
            return Ok(());
        }
        self.wait_for_log_space().await;
        let count = fresh.len() as u64;
        let bytes: u64 = fresh.iter().map(|r| r.encoded_len() as u64).sum();
        let entries = fresh
            .into_iter()
            .map(|record| Entry {
                segment: key,
                volume_epoch: VolumeEpoch(0),
                membership_epoch,
                record,
            })
            .collect();
        self.log()
            .append(entries)
            .await
            .map_err(|e| format!("appending pulled records: {e}"))?;
        self.gossip_records_pulled
            .set(self.gossip_records_pulled.get() + count);
        self.gossip_bytes_pulled
            .set(self.gossip_bytes_pulled.get() + bytes);
        Ok(())
    }
}

/// The address of the shard that serves `key` on `node`.
fn peer_addr(cluster: &ClusterMap, node: NodeId, key: SegmentKey) -> Option<SocketAddr> {
    let entry = cluster.node(node)?;
    let shards = entry.shards.unwrap_or(1);
    Some(entry.shard_addr(segment_shard(key.volume, key.pg, shards)))
}

/// The open connection to `addr`, or a new one.
async fn conn(
    conns: &mut HashMap<SocketAddr, Rc<Pipelined>>,
    addr: SocketAddr,
) -> Result<Rc<Pipelined>, String> {
    if let Some(c) = conns.get(&addr) {
        return Ok(c.clone());
    }
    let c = Rc::new(Pipelined::connect(addr, PEER_TIMEOUT, PEER_TIMEOUT).await?);
    conns.insert(addr, c.clone());
    Ok(c)
}
