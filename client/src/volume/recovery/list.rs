//! The open's first step (module comment of `recovery`): which PGs of the volume exist,
//! the highest volume epoch any shard holds, and each PG's newest membership.

use std::collections::{BTreeSet, HashMap};

use super::{Conn, Failure, Opener, READ_QUORUM};
use crate::placement::PG_MEMBERS;
use crate::types::{NodeId, PgIndex, VolumeEpoch, MAX_PGS};
use crate::wire::Message;

impl Opener<'_> {
    /// Which PGs exist, and the highest epoch any shard holds. Fails (for now) when some
    /// PG could hold data that no answering node would know of.
    pub(super) async fn list(&mut self) -> Result<(BTreeSet<PgIndex>, VolumeEpoch), Failure> {
        let work = self
            .conns
            .keys()
            .map(|c| {
                (
                    *c,
                    vec![Message::ListSegments {
                        volume: self.cfg.volume,
                    }],
                )
            })
            .collect();
        let replies = self.exchange(work).await;
        let mut pgs = BTreeSet::new();
        let mut max_epoch = VolumeEpoch(0);
        let mut answered: BTreeSet<Conn> = BTreeSet::new();
        let mut ask: HashMap<Conn, Vec<Message>> = HashMap::new();
        for (conn, r) in replies {
            match r.into_iter().next() {
                Some(Message::SegmentList {
                    max_epoch: e,
                    pgs: p,
                    ..
                }) => {
                    let volume = self.cfg.volume;
                    ask.insert(
                        conn,
                        p.iter()
                            .map(|pg| Message::GetMembership { volume, pg: *pg })
                            .collect(),
                    );
                    pgs.extend(p);
                    max_epoch = max_epoch.max(e);
                    answered.insert(conn);
                }
                other => {
                    self.down.insert(conn, format!("ListSegments: {other:?}"));
                }
            }
        }
        self.learn_memberships(ask).await;
        // A PG's committed records are on 4 of its 6 members, so 3 answering members would
        // know of it. With 6 nodes every PG has every node; in a bigger cluster with 4 or
        // more nodes silent, check each possible PG's members.
        let silent: BTreeSet<NodeId> = self.down.keys().map(|c| c.0).collect();
        let nodes = self.cluster.nodes().count();
        if silent.len() > PG_MEMBERS - READ_QUORUM {
            let check_all = nodes > PG_MEMBERS;
            let last = if check_all { MAX_PGS } else { 1 };
            for pg in (0..last).map(PgIndex) {
                let members = self.members(pg);
                let ok = members
                    .old
                    .iter()
                    .filter(|m| answered.contains(&self.conn_of(**m, pg)))
                    .count();
                if !members.read_quorum(|m| answered.contains(&self.conn_of(m, pg))) {
                    let got = answered.iter().map(|c| c.0).collect();
                    return Err(Failure::Retry(format!(
                        "PG {pg}: only {ok} of its segments answered (a read quorum is {READ_QUORUM}); no answer from {}",
                        self.unanswered(pg, &got)
                    )));
                }
            }
        }
        Ok((pgs, max_epoch))
    }

    /// Asks each shard for the membership of the PGs it listed and keeps, per PG, the
    /// newest epoch any of them holds. A membership change reaches 4 of every set it
    /// replaces, so a read quorum of the older set always meets it.
    async fn learn_memberships(&mut self, ask: HashMap<Conn, Vec<Message>>) {
        for (conn, replies) in self.exchange(ask).await {
            for r in replies {
                let Message::MembershipIs { pg, membership, .. } = r else {
                    continue;
                };
                let sets = membership.resolve(self.cluster.pg_members(self.cfg.volume, pg));
                if sets.nodes().iter().any(|n| self.cluster.node(*n).is_none()) {
                    self.down.insert(
                        conn,
                        format!("PG {pg}: membership {membership:?} names a node the cluster file lacks"),
                    );
                    continue;
                }
                if sets.epoch > self.members(pg).epoch {
                    self.memberships.insert(pg, sets);
                }
            }
        }
    }
}
