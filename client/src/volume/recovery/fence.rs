//! The open's fencing steps (module comment of `recovery`): compare-and-set on PG 0, the
//! volume-wide epoch on every shard, a second list, and raising every other PG; and the
//! read-only open's look.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Conn, Failure, Opener, READ_QUORUM};
use crate::placement::PG_MEMBERS;
use crate::quorum::WRITE_QUORUM;
use crate::types::{NodeId, PgIndex, VolumeEpoch, MAX_PGS};
use crate::volume::VolumeError;
use crate::wire::{ErrorCode, FenceMode, Message, SegmentView};

impl Opener<'_> {
    /// Takes the new epoch: compare-and-set on PG 0, then raise it for the whole volume on
    /// every shard, list the PGs again (a fenced writer may have started one since the
    /// first list), and raise it on every PG but 0.
    pub(super) async fn fence(
        &mut self,
        pgs: &mut BTreeSet<PgIndex>,
        epoch: VolumeEpoch,
    ) -> Result<BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>>, Failure> {
        let pg0 = BTreeSet::from([PgIndex(0)]);
        let views0 = self.fence_pgs(&pg0, epoch, FenceMode::Exclusive).await?;
        let won = views0.get(&PgIndex(0)).map_or(0, Vec::len);
        let winners = |n: NodeId| views0.values().flatten().any(|(m, _)| *m == n);
        if !self.members(PgIndex(0)).write_quorum(winners) {
            let answered = views0.values().flatten().map(|(n, _)| *n).collect();
            let why = if self.seen_epoch >= epoch {
                format!(
                    "another open holds epoch {} (ours was {epoch}); taking a higher one",
                    self.seen_epoch
                )
            } else {
                format!(
                    "PG 0: the new epoch {epoch} reached {won} segments, a write quorum is {WRITE_QUORUM}; no answer from {}",
                    self.unanswered(PgIndex(0), &answered)
                )
            };
            return Err(Failure::Retry(why));
        }
        self.fence_volume(epoch).await?;
        pgs.extend(self.list().await?.0);
        let rest: BTreeSet<PgIndex> = pgs.iter().copied().filter(|p| p.0 != 0).collect();
        let mut views = self.fence_pgs(&rest, epoch, FenceMode::Raise).await?;
        if self.seen_epoch > epoch {
            return Err(Failure::Fatal(VolumeError::Fenced(format!(
                "another open took epoch {} while this one was opening with {epoch}",
                self.seen_epoch
            ))));
        }
        views.extend(views0);
        self.need(&views)?;
        Ok(views)
    }

    /// Raises `epoch` for the whole volume on every shard (`Fence` mode `Volume`). Without
    /// it, a writer fenced only on the PGs an open listed could still get a write quorum on
    /// a PG it starts afterwards. Needs every shard of enough nodes that no PG keeps a write
    /// quorum of unfenced members.
    async fn fence_volume(&mut self, epoch: VolumeEpoch) -> Result<(), Failure> {
        let volume = self.cfg.volume;
        let work = self
            .conns
            .keys()
            .map(|c| {
                let fence = Message::Fence {
                    volume,
                    pg: PgIndex(0),
                    epoch,
                    mode: FenceMode::Volume,
                };
                (*c, vec![fence])
            })
            .collect();
        let mut done: BTreeMap<NodeId, u16> = BTreeMap::new();
        for (conn, replies) in self.exchange(work).await {
            match replies.into_iter().next() {
                Some(Message::FenceOk { .. }) => *done.entry(conn.0).or_default() += 1,
                Some(Message::Error {
                    code: ErrorCode::StaleEpoch,
                    detail,
                    ..
                }) => {
                    self.seen_epoch = self.seen_epoch.max(VolumeEpoch(u64::from(detail)));
                }
                other => {
                    self.down.insert(conn, format!("Fence volume: {other:?}"));
                }
            }
        }
        if self.seen_epoch > epoch {
            return Err(Failure::Retry(format!(
                "another open holds epoch {} (ours was {epoch}); taking a higher one",
                self.seen_epoch
            )));
        }
        let unfenced: BTreeSet<NodeId> = self
            .cluster
            .nodes()
            .map(|n| NodeId(n.id))
            .filter(|n| done.get(n).copied().unwrap_or(0) < self.shards(*n))
            .collect();
        if unfenced.len() < WRITE_QUORUM {
            return Ok(());
        }
        let last = if self.cluster.nodes().count() > PG_MEMBERS {
            MAX_PGS
        } else {
            1
        };
        for pg in (0..last).map(PgIndex) {
            // A fenced writer counts with the placement set or with a membership it learned.
            let placement = self.cluster.pg_members(volume, pg);
            let known = self.members(pg);
            let sets = std::iter::once(&placement).chain(known.sets());
            let open = |set: &[NodeId; PG_MEMBERS]| {
                set.iter().filter(|m| unfenced.contains(m)).count() >= WRITE_QUORUM
            };
            if sets.into_iter().any(open) {
                return Err(Failure::Retry(format!(
                    "the volume-wide epoch {epoch} did not reach every shard of enough nodes: PG {pg} has a write quorum among nodes not fenced ({})",
                    self.unanswered(pg, &done.keys().copied().collect())
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn look(
        &mut self,
        pgs: &BTreeSet<PgIndex>,
    ) -> Result<BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>>, Failure> {
        let views = self.fence_pgs(pgs, VolumeEpoch(0), FenceMode::Look).await?;
        self.need(&views)?;
        Ok(views)
    }

    fn need(&self, views: &BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>>) -> Result<(), Failure> {
        for (pg, v) in views {
            if !self
                .members(*pg)
                .read_quorum(|n| v.iter().any(|(m, _)| *m == n))
            {
                let answered = v.iter().map(|(n, _)| *n).collect();
                return Err(Failure::Retry(format!(
                    "PG {pg}: {} of its segments answered, {READ_QUORUM} of its (old) set are needed; no answer from {}",
                    v.len(),
                    self.unanswered(*pg, &answered)
                )));
            }
        }
        Ok(())
    }

    async fn fence_pgs(
        &mut self,
        pgs: &BTreeSet<PgIndex>,
        epoch: VolumeEpoch,
        mode: FenceMode,
    ) -> Result<BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>>, Failure> {
        let volume = self.cfg.volume;
        let mut work: HashMap<Conn, Vec<Message>> = HashMap::new();
        for pg in pgs {
            for m in self.members(*pg).nodes() {
                work.entry(self.conn_of(m, *pg))
                    .or_default()
                    .push(Message::Fence {
                        volume,
                        pg: *pg,
                        epoch,
                        mode,
                    });
            }
        }
        let mut views: BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>> =
            pgs.iter().map(|p| (*p, Vec::new())).collect();
        for (conn, replies) in self.exchange(work).await {
            for reply in replies {
                match reply {
                    Message::FenceOk { pg, view, .. } => {
                        views.entry(pg).or_default().push((conn.0, view));
                    }
                    Message::Error {
                        code: ErrorCode::StaleEpoch,
                        detail,
                        ..
                    } => {
                        self.seen_epoch = self.seen_epoch.max(VolumeEpoch(u64::from(detail)));
                    }
                    other => {
                        self.down.insert(conn, format!("Fence: {other:?}"));
                    }
                }
            }
        }
        Ok(views)
    }
}
