//! PG membership and its changes (DESIGN §8), sans-IO.
//!
//! A PG's members are, by default, the 6 nodes placement picks from the cluster file
//! ([`crate::placement::ClusterMap::pg_members`]) at membership epoch
//! [`MembershipEpoch::PLACEMENT`]. Replacing node F with node G is two epoch steps, each
//! stored durably on the nodes (`SetMembership`) and carried by every `AppendBatch`:
//!
//! ```text
//!   epoch e     Stable ABCDEF            writes: 4 of ABCDEF
//!   epoch e+1   Transitional ABCDEF→ABCDEG   writes: 4 of ABCDEF and 4 of ABCDEG
//!                   G hydrates (gossip, rebuild) to the highest SCL the old set had
//!   epoch e+2   Stable ABCDEG            writes: 4 of ABCDEG
//!      or       Stable ABCDEF            (reverted: F came back)
//! ```
//! Why each step is safe. A node refuses a batch of an older membership epoch than its
//! own. Each step reaches 4 of every set of the membership it replaces, so a writer still
//! on the older epoch gets at most 2 acks in one of its sets and cannot commit. A record
//! committed by the old set's rule is on 4 of ABCDEF, so on 3 of ABCDE; step 2 waits until
//! G holds every record up to X, the highest SCL among at least 3 old-set nodes that hold
//! epoch e+1. One of any 3 is among the record's 4 acks, and it acked before it took e+1
//! (it refuses e since), so its SCL already covered the record. Records committed in the
//! transitional epoch are on 4 of ABCDEG already.
//!
//! Reads during the change (volume recovery) take 3 of the **old** set: 3 of ABCDEG can miss
//! a record committed on ABCF before step 1 while G has not hydrated, so DESIGN's "3 of
//! either" holds only once G is complete, which is exactly when step 2 happens.

use bytes::{BufMut, BytesMut};

use crate::placement::PG_MEMBERS;
use crate::quorum::WRITE_QUORUM;
use crate::types::{Lsn, MembershipEpoch, NodeId};
use crate::wire::codec::{DecodeError, Reader};

/// Segments of a PG that must answer before its state is known (volume open).
pub const READ_QUORUM: usize = 3;

impl MembershipEpoch {
    /// The epoch of the placement default: the 6 nodes the cluster file gives the PG.
    pub const PLACEMENT: MembershipEpoch = MembershipEpoch(1);

    #[must_use]
    pub fn next(self) -> MembershipEpoch {
        MembershipEpoch(self.0 + 1)
    }
}

/// Who holds a PG, as a node stores it and the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// The cluster file's placement (no override stored).
    Placement,
    Stable([NodeId; PG_MEMBERS]),
    /// A replacement in progress: writes need a quorum of both sets.
    Transitional {
        old: [NodeId; PG_MEMBERS],
        new: [NodeId; PG_MEMBERS],
    },
}

/// A PG's membership at an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub epoch: MembershipEpoch,
    pub members: Members,
}

impl Membership {
    /// Bytes of [`Membership::encode`].
    pub const ENCODED_BYTES: usize = 16 + 8 * PG_MEMBERS;

    pub fn placement() -> Membership {
        Membership {
            epoch: MembershipEpoch::PLACEMENT,
            members: Members::Placement,
        }
    }

    /// The sets this membership names, resolved against the placement default.
    pub fn resolve(&self, placement: [NodeId; PG_MEMBERS]) -> MemberSets {
        let (old, new) = match self.members {
            Members::Placement => (placement, None),
            Members::Stable(set) => (set, None),
            Members::Transitional { old, new } => (old, Some(new)),
        };
        MemberSets {
            epoch: self.epoch,
            old,
            new,
        }
    }

    /// 64 bytes: epoch (u64), kind (u8: 0 placement, 1 stable, 2 transitional), 7 zero
    /// bytes, then 12 node ids (u32): the stable set or the old set, then the new set;
    /// unused ids are 0.
    pub fn encode(&self, b: &mut BytesMut) {
        b.put_u64_le(self.epoch.0);
        let (kind, first, second) = match self.members {
            Members::Placement => (0u8, [NodeId(0); PG_MEMBERS], [NodeId(0); PG_MEMBERS]),
            Members::Stable(set) => (1, set, [NodeId(0); PG_MEMBERS]),
            Members::Transitional { old, new } => (2, old, new),
        };
        b.put_u8(kind);
        b.put_bytes(0, 7);
        for n in first.iter().chain(&second) {
            b.put_u32_le(n.0);
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Membership, DecodeError> {
        let epoch = MembershipEpoch(r.u64()?);
        let kind = r.u8()?;
        r.zeros(7)?;
        let mut ids = [NodeId(0); 2 * PG_MEMBERS];
        for id in &mut ids {
            *id = NodeId(r.u32()?);
        }
        let (first, second) = ids.split_at(PG_MEMBERS);
        let first: [NodeId; PG_MEMBERS] = first.try_into().expect("6 ids");
        let second: [NodeId; PG_MEMBERS] = second.try_into().expect("6 ids");
        let bad = |detail: String| DecodeError::new("Membership", detail);
        let members = match kind {
            0 if ids.iter().all(|n| n.0 == 0) => Members::Placement,
            1 if second.iter().all(|n| n.0 == 0) => Members::Stable(check_set(first)?),
            2 => {
                let (old, new) = (check_set(first)?, check_set(second)?);
                if sorted(old) == sorted(new) {
                    return Err(bad(format!("transitional sets are the same: {old:?}")));
                }
                Members::Transitional { old, new }
            }
            0 | 1 => return Err(bad(format!("kind {kind} with unused node ids set"))),
            other => return Err(bad(format!("kind {other}; 0, 1 or 2 expected"))),
        };
        if (members == Members::Placement) != (epoch == MembershipEpoch::PLACEMENT) {
            return Err(bad(format!(
                "epoch {epoch} for {members:?} (the placement default is epoch 1, overrides come after it)"
            )));
        }
        Ok(Membership { epoch, members })
    }
}

fn sorted(mut set: [NodeId; PG_MEMBERS]) -> [NodeId; PG_MEMBERS] {
    set.sort_unstable();
    set
}

fn check_set(set: [NodeId; PG_MEMBERS]) -> Result<[NodeId; PG_MEMBERS], DecodeError> {
    let s = sorted(set);
    if s[0].0 == 0 || s.windows(2).any(|w| w[0] == w[1]) {
        return Err(DecodeError::new(
            "Membership",
            format!("a member set needs 6 distinct non-zero node ids, got {set:?}"),
        ));
    }
    Ok(set)
}

/// A PG's membership with its sets known: what the writer, volume open and the nodes
/// count quorums with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSets {
    pub epoch: MembershipEpoch,
    /// The stable set, or the set a replacement started from.
    pub old: [NodeId; PG_MEMBERS],
    /// The set a replacement moves to, while one is in progress.
    pub new: Option<[NodeId; PG_MEMBERS]>,
}

impl MemberSets {
    pub fn stable(epoch: MembershipEpoch, set: [NodeId; PG_MEMBERS]) -> MemberSets {
        MemberSets {
            epoch,
            old: set,
            new: None,
        }
    }

    /// The one set or both.
    pub fn sets(&self) -> impl Iterator<Item = &[NodeId; PG_MEMBERS]> {
        std::iter::once(&self.old).chain(self.new.as_ref())
    }

    /// Every node of either set, each once: the old set's in order, then the newcomers.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut out = self.old.to_vec();
        for n in self.new.iter().flatten() {
            if !out.contains(n) {
                out.push(*n);
            }
        }
        out
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.sets().any(|s| s.contains(&node))
    }

    /// Whether the nodes for which `has` holds are a write quorum: 4 of every set.
    pub fn write_quorum(&self, has: impl Fn(NodeId) -> bool) -> bool {
        self.sets()
            .all(|s| s.iter().filter(|n| has(**n)).count() >= WRITE_QUORUM)
    }

    /// Whether they are a read quorum: 3 of the old set (module comment).
    pub fn read_quorum(&self, has: impl Fn(NodeId) -> bool) -> bool {
        self.old.iter().filter(|n| has(**n)).count() >= READ_QUORUM
    }

    /// The highest LSN up to which a write quorum holds every record, given each member's
    /// SCL: the 4th highest SCL of each set, the lowest of those.
    pub fn quorum_point(&self, scl: impl Fn(NodeId) -> Lsn) -> Lsn {
        self.sets()
            .map(|s| {
                let mut v = s.map(&scl);
                v.sort_unstable_by(|a, b| b.cmp(a));
                v[WRITE_QUORUM - 1]
            })
            .min()
            .expect("at least one set")
    }

    /// The wire form: an override of these sets at their epoch.
    pub fn to_membership(&self) -> Membership {
        Membership {
            epoch: self.epoch,
            members: match self.new {
                None => Members::Stable(self.old),
                Some(new) => Members::Transitional { old: self.old, new },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn set(ids: [u32; 6]) -> [NodeId; PG_MEMBERS] {
        ids.map(NodeId)
    }

    fn round_trip(m: &Membership) -> Result<Membership, DecodeError> {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        assert_eq!(b.len(), Membership::ENCODED_BYTES);
        let mut r = Reader::new(Bytes::from(b), "test");
        let out = Membership::decode(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn transitional_quorum_needs_both_sets() {
        let m = MemberSets {
            epoch: MembershipEpoch(2),
            old: set([1, 2, 3, 4, 5, 6]),
            new: Some(set([1, 2, 3, 4, 5, 7])),
        };
        assert_eq!(
            m.nodes(),
            set([1, 2, 3, 4, 5, 6])
                .iter()
                .copied()
                .chain([NodeId(7)])
                .collect::<Vec<_>>()
        );
        // 1, 2, 3, 6: 4 of the old set, 3 of the new.
        assert!(!m.write_quorum(|n| [1, 2, 3, 6].contains(&n.0)));
        assert!(m.write_quorum(|n| [1, 2, 3, 4].contains(&n.0)));
        assert!(m.write_quorum(|n| [1, 2, 3, 6, 7].contains(&n.0)));
        // Reads: 3 of the old set; 3 of the new that include the newcomer are not enough.
        assert!(!m.read_quorum(|n| [4, 5, 7].contains(&n.0)));
        assert!(m.read_quorum(|n| [4, 5, 6].contains(&n.0)));
        let scl = |n: NodeId| Lsn(u64::from(n.0) * 10);
        // Old set: 60 50 40 30 ... → 30; new set: 70 50 40 30 → 30.
        assert_eq!(m.quorum_point(scl), Lsn(30));
        // The newcomer lagging holds the new set's point down to the 4th of 1..5.
        let lagging = |n: NodeId| if n.0 == 7 { Lsn(0) } else { Lsn(100) };
        assert_eq!(m.quorum_point(lagging), Lsn(100));
        let two_behind = |n: NodeId| {
            if [7, 5].contains(&n.0) {
                Lsn(0)
            } else {
                Lsn(100)
            }
        };
        assert_eq!(
            m.quorum_point(two_behind),
            Lsn(100),
            "4 of the new set: 1 2 3 4"
        );
        let three_behind = |n: NodeId| {
            if [7, 5, 4].contains(&n.0) {
                Lsn(0)
            } else {
                Lsn(100)
            }
        };
        assert_eq!(m.quorum_point(three_behind), Lsn(0));
    }

    #[test]
    fn bad_memberships_do_not_decode() {
        let ok = Membership {
            epoch: MembershipEpoch(3),
            members: Members::Transitional {
                old: set([1, 2, 3, 4, 5, 6]),
                new: set([1, 2, 3, 4, 5, 7]),
            },
        };
        assert_eq!(round_trip(&ok).unwrap(), ok);
        assert_eq!(
            round_trip(&Membership::placement()).unwrap(),
            Membership::placement()
        );
        let cases = [
            Membership {
                epoch: MembershipEpoch(2),
                members: Members::Stable(set([1, 2, 3, 4, 5, 5])),
            },
            Membership {
                epoch: MembershipEpoch(2),
                members: Members::Stable(set([0, 2, 3, 4, 5, 6])),
            },
            Membership {
                epoch: MembershipEpoch(1),
                members: Members::Stable(set([1, 2, 3, 4, 5, 6])),
            },
            Membership {
                epoch: MembershipEpoch(4),
                members: Members::Transitional {
                    old: set([1, 2, 3, 4, 5, 6]),
                    new: set([6, 5, 4, 3, 2, 1]),
                },
            },
        ];
        for m in cases {
            assert!(round_trip(&m).is_err(), "{m:?} decoded");
        }
    }

    fn any_set() -> impl Strategy<Value = [NodeId; PG_MEMBERS]> {
        proptest::sample::subsequence((1u32..=12).collect::<Vec<_>>(), 6)
            .prop_shuffle()
            .prop_map(|v| std::array::from_fn(|i| NodeId(v[i])))
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(a in any_set(), b in any_set(), epoch in 2u64..1000, kind in 0u8..3) {
            let m = match kind {
                0 => Membership::placement(),
                1 => Membership { epoch: MembershipEpoch(epoch), members: Members::Stable(a) },
                _ => Membership { epoch: MembershipEpoch(epoch), members: Members::Transitional { old: a, new: b } },
            };
            let same = kind == 2 && sorted(a) == sorted(b);
            match round_trip(&m) {
                Ok(back) => prop_assert_eq!(back, m),
                Err(e) => prop_assert!(same, "{:?}: {}", m, e),
            }
        }

        /// Against brute force: the quorum point is the highest L such that the nodes with
        /// SCL ≥ L are a write quorum.
        #[test]
        fn quorum_point_matches_brute_force(a in any_set(), b in any_set(), scls in proptest::collection::vec(0u64..20, 12)) {
            let m = MemberSets { epoch: MembershipEpoch(2), old: a, new: Some(b) };
            let scl = |n: NodeId| Lsn(scls[n.0 as usize - 1]);
            let brute = (0..20u64).rev().map(Lsn).find(|l| m.write_quorum(|n| scl(n) >= *l)).unwrap_or(Lsn(0));
            prop_assert_eq!(m.quorum_point(scl), brute);
        }
    }
}
