//! The writer following a PG's membership changes (`crate::membership`).
//!
//! ```text
//!  AppendBatch(epoch e) ──▶ node at e+1: StaleMembership(e+1)
//!        peer: membership_is_stale(pg, e+1), drop the connection
//!        reconnect: refresh_memberships ── GetMembership to every member known ── newest
//!                   epoch wins ── QuorumCore::set_membership ── resend what the node lacks
//! ```
//! One task refreshes at a time; other connections wait for it (bounded). A refresh that
//! learns nothing newer leaves the PG marked: the next refused batch tries again.

use std::time::Instant;

use super::rpc::Rpc;
use super::Inner;
use crate::membership::MemberSets;
use crate::types::{MembershipEpoch, NodeId, PgIndex};
use crate::wire::Message;

impl Inner {
    /// A node refused a batch of `pg`: it holds membership epoch `theirs`.
    pub(super) fn membership_is_stale(&self, pg: PgIndex, theirs: MembershipEpoch) {
        if theirs <= self.members_of(pg).epoch {
            return;
        }
        let mut stale = self.stale_members.borrow_mut();
        let e = stale.entry(pg).or_insert(theirs);
        *e = (*e).max(theirs);
    }

    /// PGs a node named a newer membership for than the writer counts with.
    fn stale_pgs(&self) -> Vec<PgIndex> {
        self.stale_members
            .borrow()
            .iter()
            .filter(|(pg, e)| self.members_of(**pg).epoch < **e)
            .map(|(pg, _)| *pg)
            .collect()
    }

    /// Learns the newer membership of every PG marked stale, or waits (at most twice the
    /// request timeout) for the task already doing it.
    pub(super) async fn refresh_memberships(&self) {
        let deadline = Instant::now() + 2 * self.cfg.request_timeout;
        loop {
            let stale = self.stale_pgs();
            if stale.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if self.refreshing.get() {
                futures_lite::future::or(
                    self.members_changed.notified(),
                    glommio::timer::sleep(left),
                )
                .await;
                continue;
            }
            self.refreshing.set(true);
            for pg in stale {
                if let Some(sets) = self.ask_membership(pg).await {
                    self.apply_membership(pg, sets);
                }
            }
            self.refreshing.set(false);
            self.members_changed.notify();
            return;
        }
    }

    /// Asks every node of the PG's known membership, and the newcomers it names, for the
    /// PG's membership; returns the newest one newer than the writer's.
    async fn ask_membership(&self, pg: PgIndex) -> Option<MemberSets> {
        let placement = self.cluster.pg_members(self.cfg.volume, pg);
        let mut best = self.members_of(pg);
        let mut asked: Vec<NodeId> = Vec::new();
        // Two rounds: a transitional membership names newcomers that may know a later step.
        for _ in 0..2 {
            let ask: Vec<NodeId> = best
                .nodes()
                .into_iter()
                .filter(|n| !asked.contains(n))
                .collect();
            if ask.is_empty() {
                break;
            }
            let mut tasks = Vec::new();
            for node in ask {
                asked.push(node);
                let Some(entry) = self.cluster.node(node) else {
                    continue;
                };
                let addr = entry.shard_addr(self.shard_of(node, pg));
                let (net, ct, rt) = (
                    self.cfg.network.clone(),
                    self.cfg.connect_timeout,
                    self.cfg.request_timeout,
                );
                let msg = Message::GetMembership {
                    volume: self.cfg.volume,
                    pg,
                };
                tasks.push(glommio::spawn_local(async move {
                    let mut rpc = Rpc::connect(&net, addr, ct, rt).await?;
                    rpc.call(msg).await
                }));
            }
            for t in tasks {
                if let Ok(Message::MembershipIs { membership, .. }) = t.await {
                    let sets = membership.resolve(placement);
                    let known = sets.nodes().iter().all(|n| self.cluster.node(*n).is_some());
                    if known && sets.epoch > best.epoch {
                        best = sets;
                    }
                }
            }
        }
        (best.epoch > self.members_of(pg).epoch).then_some(best)
    }

    /// Counts `pg` with `sets` from now on.
    fn apply_membership(&self, pg: PgIndex, sets: MemberSets) {
        let before = self.core.borrow().vdl();
        self.core.borrow_mut().set_membership(pg, sets);
        if let Some(p) = &self.cfg.progress {
            p(&format!(
                "PG {pg}: membership epoch {} {:?}{}",
                sets.epoch,
                sets.old,
                sets.new.map_or(String::new(), |n| format!(" -> {n:?}"))
            ));
        }
        if self.core.borrow().vdl() > before {
            self.vdl_changed.notify();
        }
    }
}
