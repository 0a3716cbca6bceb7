//! Gossip (DESIGN §8): a shard's segments fill their holes from their PG's other members,
//! without the writer.
//!
//! Every [`GOSSIP_EVERY`], in the low-priority task queue, each segment (up to
//! [`SEGMENTS_PER_ROUND`] a round, in turn) asks its 5 peers for their state
//! (`GetSegmentState`). If one has a higher SCL and a membership epoch at least its own,
//! it pulls from that peer exactly the records its backlink chain lacks up to the peer's
//! SCL ([`Segment::missing_ranges`]: below each held record whose predecessor is missing,
//! and above the highest), with `PullRecords` (carrying its membership epoch, which the
//! peer checks), [`PULL_BYTES`] per request; it appends them to its hot log and the SCL
//! moves as for a writer's batch. A reply whose records fail their CRC is asked for again.
//!
//! When a range lies below the peer's floor (`TooOld`: those records are only in its page
//! versions), the segment is rebuilt from that peer's page baseline (`rebuild.rs`) and the
//! pull goes on above it. Every [`DISCOVER_EVERY`] the shard also asks its peers which
//! segments they hold, and starts, empty, those it should hold and does not (a wiped or new
//! node); the same rounds then fill them.
//!
//! Pulled records go into the log with volume epoch 0. Records of a truncation range are
//! only ever of epochs older than the range's (each open's writer allocates above its own
//! range), so the lowest epoch is annulled by exactly the ranges that annul the record's
//! true epoch, and never by others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hexad_client::net::Network;
use hexad_client::placement::{segment_shard, ClusterMap};
use hexad_client::volume::Pipelined;
use hexad_client::wire::{ErrorCode, Message, RebuildPhase, Record};
use hexad_client::{Lsn, MembershipEpoch, NodeId, ShardId, VolumeEpoch};

use crate::disk::Disk;
use crate::hotlog::format::{Entry, SegmentKey};
use crate::rebuild::{DISCOVER_EVERY, PIN_RENEW};
use crate::reply::Reply;
use crate::segment::Segment;
use crate::shard::Shard;

/// How often each segment compares its SCL with its peers'.
pub const GOSSIP_EVERY: Duration = Duration::from_millis(200);
/// Segments that gossip per round (the rest wait their turn).
const SEGMENTS_PER_ROUND: usize = 32;
/// Bytes of records one pull asks for.
const PULL_BYTES: u32 = 1 << 20;
/// Tries per pull whose records fail their CRC.
const PULL_TRIES: u32 = 5;
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
        if let Some(reply) = self.check_membership(key, membership_epoch) {
            return reply;
        }
        let mut reply = self.fetch(key, after, to, max_bytes).await;
        reply.corrupt = matches!(&reply.message, Message::Records { records, .. } if !records.is_empty())
            && self.take_fault();
        reply
    }

    /// Gossips forever (spawn it into a low-priority task queue).
    pub async fn run_gossip(self: Rc<Self>, cluster: ClusterMap) {
        let mut conns: HashMap<SocketAddr, Rc<Pipelined>> = HashMap::new();
        let mut turn = 0usize;
        let mut discovered: Option<Instant> = None;
        loop {
            glommio::timer::sleep(GOSSIP_EVERY).await;
            if discovered.is_none_or(|at| at.elapsed() >= DISCOVER_EVERY) {
                discovered = Some(Instant::now());
                self.discover(&cluster, &mut conns).await;
            }
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
        let me = self.id.node_id;
        let Some((scl, membership)) = self
            .segments
            .borrow()
            .get(&key)
            .filter(|s| !s.retired_from(me))
            .map(|s| (s.scl(), s.membership))
        else {
            return Ok(());
        };
        let epoch = membership.epoch;
        let peers = membership
            .resolve(cluster.pg_members(key.volume, key.pg))
            .nodes();
        let mut best: Option<PeerState> = None;
        let mut answered = 0;
        for node in peers {
            if node == me {
                continue;
            }
            let Some(addr) = peer_addr(cluster, node, key) else {
                continue;
            };
            let reply = match conn(conns, addr, &self.network()).await {
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
                    membership_epoch, ..
                }) if membership_epoch > epoch => {
                    // A step this segment missed (it was down, or the operator's request
                    // did not reach it): learn it, and gossip with the new set next round.
                    return self.learn_membership(conns, addr, key).await;
                }
                Ok(Message::SegmentState {
                    scl: theirs,
                    membership_epoch,
                    ..
                }) if membership_epoch == epoch => {
                    answered += 1;
                    if theirs > best.as_ref().map_or(scl, |b| b.scl) {
                        best = Some(PeerState { addr, scl: theirs });
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    conns.remove(&addr); // reconnect next round
                }
            }
        }
        let Some(peer) = best else {
            if answered > 0 {
                self.caught_up(key);
            }
            return Ok(());
        };
        let c = conn(conns, peer.addr, &self.network()).await?;
        let mut pinned = None;
        let pulled = self.pull(&c, key, epoch, &peer, &mut pinned).await;
        if let Some((pin, _)) = pinned {
            self.keep_pin(key, &c, pin, false).await;
        }
        if pulled.is_ok() {
            self.caught_up(key);
        }
        pulled
    }

    /// A segment that rebuilt its baseline and then reached its peers' SCL serves reads.
    fn caught_up(&self, key: SegmentKey) {
        if let Some(seg) = self.segments.borrow_mut().get_mut(&key) {
            if seg.rebuild == RebuildPhase::CatchingUp {
                seg.rebuild = RebuildPhase::None;
                eprintln!(
                    "hexad-node: volume {} pg {}: rebuild complete at SCL {}; serving reads",
                    key.volume,
                    key.pg,
                    seg.scl()
                );
            }
        }
    }

    /// Asks the peer at `addr` for the PG's membership and takes it if newer.
    async fn learn_membership(
        &self,
        conns: &mut HashMap<SocketAddr, Rc<Pipelined>>,
        addr: SocketAddr,
        key: SegmentKey,
    ) -> Result<(), String> {
        let c = conn(conns, addr, &self.network()).await?;
        let reply = c
            .call(Message::GetMembership {
                volume: key.volume,
                pg: key.pg,
            })
            .await?;
        let Message::MembershipIs { membership, .. } = reply else {
            return Err(format!("{addr}: GetMembership answered {reply:?}"));
        };
        self.adopt_membership(key, membership)
            .await
            .map(|_| ())
            .map_err(|r| format!("{:?}", r.message))
    }

    /// Starts, empty, every segment a peer holds that this shard should hold too (a wiped
    /// or new node); gossip then fills it. A PG whose membership was changed counts this
    /// node only if the peer's membership names it.
    async fn discover(&self, cluster: &ClusterMap, conns: &mut HashMap<SocketAddr, Rc<Pipelined>>) {
        let me = self.id.node_id;
        let shards = self.id.shard_ports.len() as u16;
        let addrs: Vec<SocketAddr> = cluster
            .nodes()
            .filter(|n| NodeId(n.id) != me)
            .flat_map(|n| (0..n.shards.unwrap_or(1)).map(|s| n.shard_addr(ShardId(s))))
            .collect();
        for addr in addrs {
            let reply = match conn(conns, addr, &self.network()).await {
                Ok(c) => c.call(Message::GetSegmentStats).await,
                Err(e) => Err(e),
            };
            let Ok(Message::SegmentStats { segments }) = reply else {
                conns.remove(&addr);
                continue;
            };
            for s in segments {
                let key = SegmentKey {
                    volume: s.volume,
                    pg: s.pg,
                };
                if self.segments.borrow().contains_key(&key)
                    || segment_shard(s.volume, s.pg, shards) != self.id.shard
                {
                    continue;
                }
                let placement = cluster.pg_members(s.volume, s.pg);
                if s.membership_epoch > MembershipEpoch::PLACEMENT {
                    let Ok(Message::MembershipIs { membership, .. }) =
                        (match conn(conns, addr, &self.network()).await {
                            Ok(c) => {
                                c.call(Message::GetMembership {
                                    volume: s.volume,
                                    pg: s.pg,
                                })
                                .await
                            }
                            Err(e) => Err(e),
                        })
                    else {
                        continue;
                    };
                    if !membership.resolve(placement).contains(me) {
                        continue;
                    }
                    eprintln!(
                        "hexad-node: volume {} pg {}: held by {addr}, whose membership epoch {} names this node; starting it empty for gossip to fill",
                        s.volume, s.pg, membership.epoch
                    );
                    if let Err(r) = self.adopt_membership(key, membership).await {
                        eprintln!(
                            "hexad-node: volume {} pg {}: {:?}",
                            s.volume, s.pg, r.message
                        );
                    }
                    continue;
                }
                if !placement.contains(&me) {
                    continue;
                }
                eprintln!(
                    "hexad-node: volume {} pg {}: held by {addr} and a member here, but missing; starting it empty for gossip to fill",
                    s.volume, s.pg
                );
                self.segments.borrow_mut().insert(key, Segment::new(key));
            }
        }
    }

    /// Pulls the ranges the segment's chain lacks up to the peer's SCL, until none is
    /// left. A range below the peer's floor rebuilds the segment from the peer's baseline
    /// first (`pinned` then holds the peer's pinned floor and when it was last renewed).
    async fn pull(
        &self,
        c: &Rc<Pipelined>,
        key: SegmentKey,
        epoch: MembershipEpoch,
        peer: &PeerState,
        pinned: &mut Option<(Lsn, Instant)>,
    ) -> Result<(), String> {
        loop {
            let (scl, ranges) = match self.segments.borrow().get(&key) {
                Some(seg) => (seg.scl(), seg.missing_ranges(peer.scl)),
                None => return Ok(()),
            };
            if scl >= peer.scl || ranges.is_empty() {
                return Ok(());
            }
            if let Some((pin, renewed)) = pinned {
                if renewed.elapsed() >= PIN_RENEW {
                    self.keep_pin(key, c, *pin, true).await;
                    *renewed = Instant::now();
                }
            }
            let mut gained = 0;
            for (after, to) in ranges {
                match self.pull_range(c, key, epoch, peer.addr, after, to).await? {
                    Some(n) => gained += n,
                    None if pinned.is_some() => {
                        return Err(format!(
                            "{}: the records after LSN {after} are below its floor even after a rebuild from it",
                            peer.addr
                        ))
                    }
                    None => {
                        let floor = self.rebuild_from(key, peer.addr, c).await?;
                        *pinned = Some((floor, Instant::now()));
                        gained += 1;
                        break;
                    }
                }
            }
            let now = self
                .segments
                .borrow()
                .get(&key)
                .map_or(Lsn::NONE, Segment::scl);
            if gained == 0 && now <= scl {
                return Err(format!(
                    "pulled from {} above LSN {scl} and got nothing new (the peer's chain has a hole of its own there?)",
                    peer.addr
                ));
            }
        }
    }

    /// Pulls the records in `(after, to]` from the peer, a megabyte at a time, and appends
    /// those not held. Returns how many were new, or `None` if they are below the peer's
    /// floor. A reply whose records fail their CRC is asked for again.
    async fn pull_range(
        &self,
        c: &Pipelined,
        key: SegmentKey,
        epoch: MembershipEpoch,
        peer: SocketAddr,
        mut after: Lsn,
        to: Lsn,
    ) -> Result<Option<u64>, String> {
        let (mut fresh, mut tries) = (0, 0);
        loop {
            let reply = c
                .call(Message::PullRecords {
                    volume: key.volume,
                    pg: key.pg,
                    membership_epoch: epoch,
                    after_lsn: after,
                    to_lsn: to,
                    max_bytes: PULL_BYTES,
                })
                .await;
            let (records, more) = match reply {
                Ok(Message::Records { records, more, .. }) => (records, more),
                Ok(Message::Error {
                    code: ErrorCode::TooOld,
                    ..
                }) => return Ok(None),
                Ok(other) => return Err(format!("{peer}: {other:?}")),
                // The reply arrived but its records failed their CRC: ask again.
                Err(e) if e.contains("CRC") && tries < PULL_TRIES => {
                    tries += 1;
                    self.repair_chunks_rejected
                        .set(self.repair_chunks_rejected.get() + 1);
                    eprintln!(
                        "hexad-node: gossip for volume {} pg {}: records from {peer} after LSN {after} rejected (try {tries} of {PULL_TRIES}): {e}",
                        key.volume, key.pg
                    );
                    continue;
                }
                Err(e) => return Err(format!("{peer}: {e}")),
            };
            let Some(last) = records.last().map(|r| r.lsn) else {
                return Ok(Some(fresh));
            };
            fresh += self.append_pulled(key, records).await?;
            if !more || last >= to {
                return Ok(Some(fresh));
            }
            after = last;
        }
    }

    /// Appends the pulled records this segment does not hold yet to the hot log (epoch 0,
    /// see the module comment); they join the segment once durable.
    async fn append_pulled(&self, key: SegmentKey, records: Vec<Record>) -> Result<u64, String> {
        let (fresh, membership_epoch): (Vec<Record>, MembershipEpoch) = {
            let segs = self.segments.borrow();
            let Some(seg) = segs.get(&key) else {
                return Ok(0);
            };
            let fresh = records
                .into_iter()
                .filter(|r| r.lsn > seg.floor() && !seg.holds(r.lsn) && key.pg.contains(r.page))
                .collect();
            (fresh, seg.membership_epoch())
        };
        if fresh.is_empty() {
            return Ok(0);
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
        if let Some(seg) = self.segments.borrow_mut().get_mut(&key) {
            seg.gossip_records += count;
            seg.gossip_bytes += bytes;
        }
        Ok(count)
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
    network: &Network,
) -> Result<Rc<Pipelined>, String> {
    if let Some(c) = conns.get(&addr) {
        return Ok(c.clone());
    }
    let c = Rc::new(Pipelined::connect(network, addr, PEER_TIMEOUT, PEER_TIMEOUT).await?);
    conns.insert(addr, c.clone());
    Ok(c)
}
