//! The writer's quorum arithmetic, sans-IO: fed allocations, acks and `now`; it answers
//! with LSNs, the PG / volume complete LSNs, and what may be dropped from memory. No sockets,
//! no clock, no runtime: the transport (issue #3) and the deterministic simulator drive it.
//!
//! ```text
//!  allocate(pg, cpl) ──▶ LSN (or BackPressure: above VDL + LAL, or over the byte budget)
//!  on_ack(pg, node, scl) ──▶ node's SCL for the PG ──▶ PGCL = 4th highest member SCL
//!        ──▶ VCL = one below the oldest allocated LSN its PG has not covered
//!        ──▶ VDL = highest CPL ≤ VCL ──▶ commits ≤ VDL are acknowledged
//! ```
//! A node's SCL means "I hold every record of this PG up to here", so if 4 of the 6 members
//! report SCL ≥ L, every record of the PG with LSN ≤ L is durable on a write quorum.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::membership::MemberSets;
use crate::types::{Lsn, NodeId, PgIndex};

/// Segments that must hold a record before it counts as durable.
pub const WRITE_QUORUM: usize = 4;
/// Default LSN allocation limit: no LSN above VDL + LAL.
pub const DEFAULT_LAL: u64 = 10_000_000;

#[derive(Debug, Clone, Copy)]
pub struct QuorumConfig {
    /// LSN allocation limit.
    pub lal: u64,
    /// Bytes of records kept for resending while they are not yet on all 6 members.
    pub retained_bytes_max: u64,
    /// How long a quorum-durable record is kept for laggards before gossip is left to it.
    pub retain_after_quorum: Duration,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            lal: DEFAULT_LAL,
            retained_bytes_max: 64 << 20,
            retain_after_quorum: Duration::from_secs(2),
        }
    }
}

/// Why an LSN cannot be allocated now; the caller waits for acks and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackPressure {
    #[error("LSN {next} would pass the allocation limit VDL {vdl} + LAL {lal}")]
    Lal { next: Lsn, vdl: Lsn, lal: u64 },
    #[error("{retained} bytes of records await all 6 segments; budget {max}")]
    Bytes { retained: u64, max: u64 },
}

/// A newly allocated LSN with the PG backlink the record must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub lsn: Lsn,
    pub prev_lsn_pg: Lsn,
}

#[derive(Debug, Clone)]
struct PgTrack {
    sets: MemberSets,
    /// Every member of either set with the SCL it last reported.
    scl: Vec<(NodeId, Lsn)>,
    pgcl: Lsn,
    last_lsn: Lsn,
    /// Allocated LSNs of this PG above its PGCL.
    pending: BTreeSet<Lsn>,
}

#[derive(Debug, Clone, Copy)]
struct Retained {
    pg: PgIndex,
    bytes: u64,
    allocated_at: Instant,
}

#[derive(Debug)]
pub struct QuorumCore {
    cfg: QuorumConfig,
    pgs: HashMap<PgIndex, PgTrack>,
    last_allocated: Lsn,
    /// Allocated LSNs not yet covered by their PG's PGCL, across all PGs.
    pending: BTreeSet<Lsn>,
    /// CPL LSNs above VDL.
    cpls: BTreeSet<Lsn>,
    vcl: Lsn,
    vdl: Lsn,
    retained: BTreeMap<Lsn, Retained>,
    retained_bytes: u64,
}

impl QuorumCore {
    /// Starts allocating above `after` (after recovery: above the truncation range). Every
    /// LSN ≤ `after` counts as complete.
    pub fn new(cfg: QuorumConfig, after: Lsn) -> QuorumCore {
        QuorumCore {
            cfg,
            pgs: HashMap::new(),
            last_allocated: after,
            pending: BTreeSet::new(),
            cpls: BTreeSet::new(),
            vcl: after,
            vdl: after,
            retained: BTreeMap::new(),
            retained_bytes: 0,
        }
    }

    /// Registers a PG with its members and the last LSN it already holds (its PG backlink
    /// head; `Lsn::NONE` for a new PG).
    pub fn add_pg(&mut self, pg: PgIndex, sets: MemberSets, last_lsn: Lsn) {
        let prev = self.pgs.insert(
            pg,
            PgTrack {
                sets,
                scl: sets.nodes().into_iter().map(|n| (n, last_lsn)).collect(),
                pgcl: last_lsn,
                last_lsn,
                pending: BTreeSet::new(),
            },
        );
        assert!(prev.is_none(), "PG {pg} added twice");
    }

    /// A newer membership of `pg` (a replacement step). Members it keeps keep their SCL; a
    /// newcomer starts at 0 until it reports. PGCL never moves back: what is committed
    /// stays committed (the replacement protocol keeps it on a quorum of every set,
    /// `membership.rs`); from now on it advances only on a quorum of every set.
    pub fn set_membership(&mut self, pg: PgIndex, sets: MemberSets) {
        let Some(track) = self.pgs.get_mut(&pg) else {
            return;
        };
        if sets.epoch <= track.sets.epoch {
            return;
        }
        let old = std::mem::take(&mut track.scl);
        track.scl = sets
            .nodes()
            .into_iter()
            .map(|n| {
                let known = old.iter().find(|(m, _)| *m == n).map(|(_, s)| *s);
                (n, known.unwrap_or(Lsn::NONE))
            })
            .collect();
        track.sets = sets;
        self.recompute(pg);
    }

    /// The membership the core counts `pg` with.
    pub fn membership(&self, pg: PgIndex) -> Option<MemberSets> {
        self.pgs.get(&pg).map(|t| t.sets)
    }

    /// Every registered PG with its membership.
    pub fn memberships(&self) -> impl Iterator<Item = (PgIndex, MemberSets)> + '_ {
        self.pgs.iter().map(|(pg, t)| (*pg, t.sets))
    }

    /// Whether `records` more records of `bytes` bytes in all may be allocated now. A
    /// mini-transaction checks once for all its records, then allocates them back to back,
    /// so its LSNs are contiguous and VDL can never fall inside it.
    pub fn room_for(&self, records: u64, bytes: u64) -> Result<(), BackPressure> {
        let last = Lsn(self.last_allocated.0 + records);
        if last.0 > self.vdl.0.saturating_add(self.cfg.lal) {
            return Err(BackPressure::Lal {
                next: last,
                vdl: self.vdl,
                lal: self.cfg.lal,
            });
        }
        if self.retained_bytes > 0 && self.retained_bytes + bytes > self.cfg.retained_bytes_max {
            return Err(BackPressure::Bytes {
                retained: self.retained_bytes,
                max: self.cfg.retained_bytes_max,
            });
        }
        Ok(())
    }

    /// Allocates the next LSN for a record of `pg` of `bytes` bytes.
    pub fn allocate(
        &mut self,
        pg: PgIndex,
        cpl: bool,
        bytes: u64,
        now: Instant,
    ) -> Result<Allocation, BackPressure> {
        self.room_for(1, bytes)?;
        let next = Lsn(self.last_allocated.0 + 1);
        let track = self
            .pgs
            .get_mut(&pg)
            .unwrap_or_else(|| panic!("allocate for unregistered PG {pg}"));
        let prev_lsn_pg = track.last_lsn;
        track.last_lsn = next;
        track.pending.insert(next);
        self.pending.insert(next);
        self.last_allocated = next;
        if cpl {
            self.cpls.insert(next);
        }
        self.retained.insert(
            next,
            Retained {
                pg,
                bytes,
                allocated_at: now,
            },
        );
        self.retained_bytes += bytes;
        Ok(Allocation {
            lsn: next,
            prev_lsn_pg,
        })
    }

    /// A member of `pg` reports its SCL (from an ack or a state reply). Returns the VDL.
    pub fn on_ack(&mut self, pg: PgIndex, node: NodeId, scl: Lsn) -> Lsn {
        let Some(track) = self.pgs.get_mut(&pg) else {
            return self.vdl;
        };
        let Some(slot) = track.scl.iter().position(|(m, _)| *m == node) else {
            return self.vdl;
        };
        // A node never holds more of the PG than was allocated for it.
        let scl = scl.min(track.last_lsn);
        if scl <= track.scl[slot].1 {
            return self.vdl;
        }
        track.scl[slot].1 = scl;
        self.recompute(pg);
        self.vdl
    }

    /// Moves the PG's PGCL up to what its members' SCLs now prove, and VCL and VDL after it.
    fn recompute(&mut self, pg: PgIndex) {
        let track = self.pgs.get_mut(&pg).expect("recompute of a known PG");
        let scls = &track.scl;
        let pgcl = track.sets.quorum_point(|n| {
            scls.iter()
                .find(|(m, _)| *m == n)
                .map_or(Lsn::NONE, |(_, s)| *s)
        });
        if pgcl > track.pgcl {
            track.pgcl = pgcl;
            let covered: Vec<Lsn> = track.pending.range(..=pgcl).copied().collect();
            for l in covered {
                track.pending.remove(&l);
                self.pending.remove(&l);
            }
            self.advance();
        }
    }

    fn advance(&mut self) {
        let vcl = match self.pending.first() {
            Some(oldest) => Lsn(oldest.0 - 1),
            None => self.last_allocated,
        };
        assert!(
            vcl >= self.vcl,
            "VCL moved backwards: {} -> {vcl}",
            self.vcl
        );
        self.vcl = vcl;
        if let Some(&cpl) = self.cpls.range(..=vcl).next_back() {
            assert!(cpl > self.vdl, "VDL moved backwards");
            self.vdl = cpl;
            self.cpls = self.cpls.split_off(&Lsn(cpl.0 + 1));
        }
    }

    /// Records that no longer need to be kept for resending, oldest first: those every
    /// member holds, and quorum-durable ones older than `retain_after_quorum` (gossip brings
    /// laggards up to date after that). Stops at the first record still needed.
    pub fn release(&mut self, now: Instant) -> Vec<Lsn> {
        let mut out = Vec::new();
        while let Some((&lsn, r)) = self.retained.first_key_value() {
            let track = &self.pgs[&r.pg];
            let on_all = track.scl.iter().all(|(_, s)| *s >= lsn);
            let aged = lsn <= track.pgcl
                && now.duration_since(r.allocated_at) >= self.cfg.retain_after_quorum;
            if !(on_all || aged) {
                break;
            }
            self.retained_bytes -= r.bytes;
            self.retained.remove(&lsn);
            out.push(lsn);
        }
        out
    }

    pub fn vcl(&self) -> Lsn {
        self.vcl
    }

    pub fn vdl(&self) -> Lsn {
        self.vdl
    }

    pub fn pgcl(&self, pg: PgIndex) -> Option<Lsn> {
        self.pgs.get(&pg).map(|t| t.pgcl)
    }

    /// The PG's last record at or below `read`, as far as the writer can tell: a segment
    /// whose SCL reaches it holds every record of the PG up to `read`. Every allocated LSN
    /// of the PG above its PGCL is tracked, so at or above the PGCL this is exact; below it
    /// the writer no longer knows and answers `read` itself (asking a little more).
    pub fn complete_point(&self, pg: PgIndex, read: Lsn) -> Option<Lsn> {
        let t = self.pgs.get(&pg)?;
        Some(if read >= t.last_lsn {
            t.last_lsn
        } else if let Some(l) = t.pending.range(..=read).next_back() {
            *l
        } else if read >= t.pgcl {
            t.pgcl
        } else {
            read
        })
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// The SCL `node` last reported for `pg`, if it is a member.
    pub fn member_scl(&self, pg: PgIndex, node: NodeId) -> Option<Lsn> {
        let t = self.pgs.get(&pg)?;
        t.scl.iter().find(|(m, _)| *m == node).map(|(_, s)| *s)
    }

    /// Members of `pg` that have not yet reported every record allocated for it: the ones
    /// a "quorum unavailable" error names.
    pub fn lagging(&self, pg: PgIndex) -> Vec<NodeId> {
        self.pgs.get(&pg).map_or_else(Vec::new, |t| {
            t.scl
                .iter()
                .filter(|(_, s)| *s < t.last_lsn)
                .map(|(m, _)| *m)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MembershipEpoch;
    use proptest::prelude::*;

    const MEMBERS: [NodeId; 6] = [
        NodeId(1),
        NodeId(2),
        NodeId(3),
        NodeId(4),
        NodeId(5),
        NodeId(6),
    ];

    fn stable() -> MemberSets {
        MemberSets::stable(MembershipEpoch::PLACEMENT, MEMBERS)
    }

    fn core(after: u64, lal: u64) -> QuorumCore {
        let cfg = QuorumConfig {
            lal,
            ..QuorumConfig::default()
        };
        QuorumCore::new(cfg, Lsn(after))
    }

    #[test]
    fn sigmod18_example_pgcl_103_and_104_give_vcl_104() {
        // PG1 holds the odd LSNs, PG2 the even ones (Verbitski et al., SIGMOD 2018, §4.1).
        let now = Instant::now();
        let mut q = core(100, DEFAULT_LAL);
        q.add_pg(PgIndex(1), stable(), Lsn::NONE);
        q.add_pg(PgIndex(2), stable(), Lsn::NONE);
        for lsn in 101..=105u64 {
            let pg = if lsn % 2 == 1 { PgIndex(1) } else { PgIndex(2) };
            let a = q.allocate(pg, true, 100, now).unwrap();
            assert_eq!(a.lsn, Lsn(lsn));
        }
        for node in &MEMBERS[..4] {
            q.on_ack(PgIndex(1), *node, Lsn(103));
            q.on_ack(PgIndex(2), *node, Lsn(104));
        }
        assert_eq!(
            (q.pgcl(PgIndex(1)), q.pgcl(PgIndex(2))),
            (Some(Lsn(103)), Some(Lsn(104)))
        );
        assert_eq!(q.vcl(), Lsn(104));
        assert_eq!(q.vdl(), Lsn(104));
    }

    #[test]
    fn three_acks_are_not_a_quorum() {
        let now = Instant::now();
        let mut q = core(0, DEFAULT_LAL);
        q.add_pg(PgIndex(0), stable(), Lsn::NONE);
        let a = q.allocate(PgIndex(0), true, 10, now).unwrap();
        assert_eq!(a.prev_lsn_pg, Lsn::NONE);
        for node in &MEMBERS[..3] {
            assert_eq!(q.on_ack(PgIndex(0), *node, a.lsn), Lsn(0));
        }
        assert_eq!(q.lagging(PgIndex(0)), MEMBERS[3..].to_vec());
        assert_eq!(
            q.on_ack(PgIndex(0), NodeId(99), a.lsn),
            Lsn(0),
            "a non-member does not count"
        );
        assert_eq!(q.on_ack(PgIndex(0), MEMBERS[5], a.lsn), a.lsn);
    }

    #[test]
    fn vdl_is_the_highest_cpl_at_or_below_vcl() {
        let now = Instant::now();
        let mut q = core(0, DEFAULT_LAL);
        q.add_pg(PgIndex(0), stable(), Lsn::NONE);
        q.allocate(PgIndex(0), false, 1, now).unwrap();
        q.allocate(PgIndex(0), true, 1, now).unwrap();
        q.allocate(PgIndex(0), false, 1, now).unwrap();
        for node in &MEMBERS[..4] {
            q.on_ack(PgIndex(0), *node, Lsn(3));
        }
        assert_eq!((q.vcl(), q.vdl()), (Lsn(3), Lsn(2)));
    }

    #[test]
    fn lal_pushes_back_until_vdl_moves() {
        let now = Instant::now();
        let mut q = core(0, 3);
        q.add_pg(PgIndex(0), stable(), Lsn::NONE);
        for _ in 0..3 {
            q.allocate(PgIndex(0), true, 10, now).unwrap();
        }
        assert!(matches!(
            q.allocate(PgIndex(0), true, 10, now),
            Err(BackPressure::Lal { next: Lsn(4), .. })
        ));
        for node in &MEMBERS[..4] {
            q.on_ack(PgIndex(0), *node, Lsn(1));
        }
        assert_eq!(q.allocate(PgIndex(0), true, 10, now).unwrap().lsn, Lsn(4));
        assert!(q.allocate(PgIndex(0), true, 10, now).is_err());
    }

    #[test]
    fn byte_budget_pushes_back_until_records_are_released() {
        let now = Instant::now();
        let cfg = QuorumConfig {
            lal: DEFAULT_LAL,
            retained_bytes_max: 1000,
            retain_after_quorum: Duration::from_secs(1),
        };
        let mut q = QuorumCore::new(cfg, Lsn(0));
        q.add_pg(PgIndex(0), stable(), Lsn::NONE);
        for _ in 0..4 {
            q.allocate(PgIndex(0), true, 10, now).unwrap();
        }
        assert!(matches!(
            q.allocate(PgIndex(0), true, 990, now),
            Err(BackPressure::Bytes { retained: 40, .. })
        ));
        for node in &MEMBERS[..4] {
            q.on_ack(PgIndex(0), *node, Lsn(1));
        }
        assert_eq!(
            q.release(now),
            Vec::<Lsn>::new(),
            "durable but young, and not on all 6"
        );
        assert_eq!(q.release(now + Duration::from_secs(2)), vec![Lsn(1)]);
        assert_eq!(q.retained_bytes(), 30);
        for node in &MEMBERS {
            q.on_ack(PgIndex(0), *node, Lsn(4));
        }
        assert_eq!(
            q.release(now),
            vec![Lsn(2), Lsn(3), Lsn(4)],
            "on all 6: released at once"
        );
        q.allocate(PgIndex(0), true, 990, now).unwrap();
    }

    #[test]
    fn a_transitional_membership_counts_both_sets_and_keeps_what_was_committed() {
        let now = Instant::now();
        let mut q = core(0, DEFAULT_LAL);
        q.add_pg(PgIndex(0), stable(), Lsn::NONE);
        for _ in 0..4 {
            q.allocate(PgIndex(0), true, 1, now).unwrap();
        }
        // 2 committed on nodes 1, 2, 3, 6.
        for n in [1, 2, 3, 6] {
            q.on_ack(PgIndex(0), NodeId(n), Lsn(2));
        }
        assert_eq!(q.vdl(), Lsn(2));
        // Replace 6 with 7: the new set 1..5 + 7 holds 2 on only three nodes, yet what was
        // committed stays committed.
        let new = [1, 2, 3, 4, 5, 7].map(NodeId);
        q.set_membership(
            PgIndex(0),
            MemberSets {
                epoch: MembershipEpoch(2),
                old: MEMBERS,
                new: Some(new),
            },
        );
        assert_eq!(q.vdl(), Lsn(2));
        assert_eq!(q.member_scl(PgIndex(0), NodeId(7)), Some(Lsn::NONE));
        assert_eq!(q.member_scl(PgIndex(0), NodeId(6)), Some(Lsn(2)));
        // 4 of the old set (1 2 3 6) is not enough for 3 any more...
        for n in [1, 2, 3, 6] {
            q.on_ack(PgIndex(0), NodeId(n), Lsn(3));
        }
        assert_eq!(q.vdl(), Lsn(2));
        // ...until the new set has 4 too (1 2 3 7).
        q.on_ack(PgIndex(0), NodeId(7), Lsn(3));
        assert_eq!(q.vdl(), Lsn(3));
        // An older membership is ignored; the final step drops node 6.
        q.set_membership(PgIndex(0), MemberSets::stable(MembershipEpoch(1), MEMBERS));
        assert_eq!(q.membership(PgIndex(0)).unwrap().epoch, MembershipEpoch(2));
        q.set_membership(PgIndex(0), MemberSets::stable(MembershipEpoch(3), new));
        assert_eq!(q.member_scl(PgIndex(0), NodeId(6)), None);
        for n in [1, 2, 4, 7] {
            q.on_ack(PgIndex(0), NodeId(n), Lsn(4));
        }
        assert_eq!(q.vdl(), Lsn(4));
        assert_eq!(
            q.release(now),
            Vec::<Lsn>::new(),
            "LSN 1 is not on node 5 yet"
        );
        for n in [3, 5] {
            q.on_ack(PgIndex(0), NodeId(n), Lsn(4));
        }
        assert_eq!(q.release(now).len(), 4, "on every member of the new set");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allocate { pg: u32, cpl: bool },
        Ack { pg: u32, member: usize, back: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..3, any::<bool>()).prop_map(|(pg, cpl)| Step::Allocate { pg, cpl }),
            (0u32..3, 0usize..6, 0u64..4).prop_map(|(pg, member, back)| Step::Ack {
                pg,
                member,
                back
            }),
        ]
    }

    proptest! {
        /// Against a brute-force reference: VCL is the highest LSN with every allocated LSN at
        /// or below it on ≥ 4 members' SCL; VDL the highest CPL ≤ VCL; neither goes back.
        #[test]
        fn matches_brute_force(steps in proptest::collection::vec(step(), 1..200)) {
            let now = Instant::now();
            let mut q = core(0, DEFAULT_LAL);
            let mut allocated: Vec<(Lsn, u32, bool)> = Vec::new();
            let mut scl = [[Lsn(0); 6]; 3];
            for pg in 0..3 {
                q.add_pg(PgIndex(pg), stable(), Lsn::NONE);
            }
            let (mut last_vcl, mut last_vdl) = (Lsn(0), Lsn(0));
            for s in steps {
                match s {
                    Step::Allocate { pg, cpl } => {
                        let a = q.allocate(PgIndex(pg), cpl, 1, now).unwrap();
                        allocated.push((a.lsn, pg, cpl));
                    }
                    Step::Ack { pg, member, back } => {
                        // The member reports an SCL some way behind the PG's newest record.
                        let of_pg: Vec<Lsn> = allocated.iter().filter(|a| a.1 == pg).map(|a| a.0).collect();
                        let Some(idx) = of_pg.len().checked_sub(1 + back as usize) else { continue };
                        let reported = of_pg[idx];
                        let slot = &mut scl[pg as usize][member];
                        *slot = (*slot).max(reported);
                        q.on_ack(PgIndex(pg), MEMBERS[member], reported);
                    }
                }
                let durable = |(l, pg, _): &(Lsn, u32, bool)| scl[*pg as usize].iter().filter(|s| **s >= *l).count() >= 4;
                let vcl = allocated.iter().take_while(|a| durable(a)).last().map_or(Lsn(0), |a| a.0);
                let vdl = allocated.iter().filter(|a| a.2 && a.0 <= vcl).map(|a| a.0).next_back().unwrap_or(Lsn(0));
                prop_assert_eq!(q.vcl(), vcl);
                prop_assert_eq!(q.vdl(), vdl);
                prop_assert!(vcl >= last_vcl && vdl >= last_vdl);
                last_vcl = vcl;
                last_vdl = vdl;
            }
        }
    }
}
