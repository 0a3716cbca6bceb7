//! A segment's membership (DESIGN §8, `hexad_client::membership`): who holds its PG, at
//! which epoch. An operator's replacement steps arrive as `SetMembership`; the segment
//! persists the newer membership before it answers, refuses from then on writers and
//! repair requests of an older epoch (`StaleMembership`), gossips with the new set, and
//! stops gossiping once a step leaves this node out (the segment stays on disk). A segment
//! that missed a step learns it from a peer through gossip ([`Shard::adopt_membership`]).

use hexad_client::membership::{Members, Membership};
use hexad_client::wire::{ErrorCode, Message};
use hexad_client::MembershipEpoch;

use crate::disk::Disk;
use crate::hotlog::format::SegmentKey;
use crate::reply::{no_such_segment, Reply};
use crate::segment::Segment;
use crate::shard::Shard;

impl<D: Disk + 'static> Shard<D> {
    /// Refuses a request (a writer's batch, a peer's repair request) of an older membership
    /// epoch than the segment's.
    pub(crate) fn check_membership(
        &self,
        key: SegmentKey,
        membership_epoch: MembershipEpoch,
    ) -> Option<Reply> {
        let mine = self
            .segments
            .borrow()
            .get(&key)
            .map(Segment::membership_epoch);
        let mine = mine.filter(|m| *m > membership_epoch)?;
        Some(Reply::error(
            ErrorCode::StaleMembership,
            u32::try_from(mine.0).unwrap_or(u32::MAX),
            format!(
                "volume {} pg {}: request of membership epoch {membership_epoch}, this segment is at {mine}",
                key.volume, key.pg
            ),
        ))
    }

    pub(crate) fn get_membership(&self, key: SegmentKey) -> Reply {
        match self.segments.borrow().get(&key) {
            Some(seg) => Reply::ok(Message::MembershipIs {
                volume: key.volume,
                pg: key.pg,
                membership: seg.membership,
                scl: seg.scl(),
            }),
            None => no_such_segment(key),
        }
    }

    /// `SetMembership`: stores a newer membership (see the message's doc).
    pub(crate) async fn set_membership(&self, key: SegmentKey, m: Membership) -> Reply {
        if m.members == Members::Placement {
            return Reply::error(
                ErrorCode::Malformed,
                0,
                "SetMembership needs a stable or transitional member set, not the placement default".into(),
            );
        }
        if let Some(seg) = self.segments.borrow().get(&key) {
            let mine = seg.membership;
            if mine.epoch > m.epoch {
                return self
                    .check_membership(key, m.epoch)
                    .expect("the segment's epoch is newer");
            }
            if mine.epoch == m.epoch && mine != m {
                return Reply::error(
                    ErrorCode::Internal,
                    0,
                    format!(
                        "volume {} pg {}: membership epoch {} is already {:?}, not {:?}",
                        key.volume, key.pg, m.epoch, mine.members, m.members
                    ),
                );
            }
        }
        if let Err(reply) = self.adopt_membership(key, m).await {
            return reply;
        }
        self.get_membership(key)
    }

    /// Takes `m` if it is newer than what the segment holds (creating the segment for a
    /// node joining the PG), persisted before it counts. Returns whether it changed.
    pub(crate) async fn adopt_membership(
        &self,
        key: SegmentKey,
        m: Membership,
    ) -> Result<bool, Reply> {
        let newer = self
            .segments
            .borrow()
            .get(&key)
            .is_none_or(|s| s.membership.epoch < m.epoch);
        if !newer {
            return Ok(false);
        }
        let mut meta = self.meta_entry(key);
        meta.membership = m;
        self.persist(key, meta).await?;
        let mut segs = self.segments.borrow_mut();
        let seg = segs.entry(key).or_insert_with(|| Segment::new(key));
        if seg.membership.epoch < m.epoch {
            seg.membership = m;
            let me = self.id.node_id;
            eprintln!(
                "hexad-node: volume {} pg {}: membership epoch {}: {:?}{}",
                key.volume,
                key.pg,
                m.epoch,
                m.members,
                if seg.retired_from(me) {
                    "; this node is no longer a member (the segment stays on disk, unused)"
                } else {
                    ""
                }
            );
        }
        Ok(true)
    }
}
