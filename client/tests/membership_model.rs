//! A model of replacing a node under load, run against the real quorum core
//! (`QuorumCore`, `MemberSets`): one writer, nodes 1..=6 holding PG 0, node 7 joining in
//! place of node 6, every message delivered in a random order, node 6 possibly dying, and
//! the operator's three steps (`hexad_client::membership`) interleaved with all of it.
//!
//! The nodes are modelled as the node code behaves: a record is held once delivered, a
//! batch of an older membership epoch is refused (before and after it is appended), an ack
//! carries the node's SCL. The writer follows a refusal by learning the newest membership
//! from the nodes and resending what is not committed yet (older records may have left its
//! memory). The operator's hydration
//! target is the highest SCL among 3 old-set nodes holding the transitional epoch.
//!
//! Checked at the end of every run: each record at or below the writer's VDL is held by
//! at least 4 nodes of the final set. (The core asserts that VCL and VDL never move back.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hexad_client::membership::MemberSets;
use hexad_client::quorum::{QuorumConfig, QuorumCore};
use hexad_client::{Lsn, MembershipEpoch, NodeId, PgIndex};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const PG: PgIndex = PgIndex(0);
const OLD: [NodeId; 6] = [
    NodeId(1),
    NodeId(2),
    NodeId(3),
    NodeId(4),
    NodeId(5),
    NodeId(6),
];
const NEW: [NodeId; 6] = [
    NodeId(1),
    NodeId(2),
    NodeId(3),
    NodeId(4),
    NodeId(5),
    NodeId(7),
];
const FROM: usize = 6;
const TO: usize = 7;

#[derive(Debug, Default, Clone)]
struct Node {
    /// Membership epoch held (0: no segment yet).
    epoch: u64,
    held: BTreeSet<u64>,
    alive: bool,
}

impl Node {
    fn scl(&self) -> u64 {
        let mut scl = 0;
        while self.held.contains(&(scl + 1)) {
            scl += 1;
        }
        scl
    }
}

fn sets_of(epoch: u64) -> MemberSets {
    match epoch {
        1 => MemberSets::stable(MembershipEpoch(1), OLD),
        2 => MemberSets {
            epoch: MembershipEpoch(2),
            old: OLD,
            new: Some(NEW),
        },
        _ => MemberSets::stable(MembershipEpoch(3), NEW),
    }
}

/// The operator's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Step1,
    Hydrate { target: u64 },
    Step3,
    Done,
}

struct World {
    nodes: Vec<Node>,
    core: QuorumCore,
    /// Records on the way: (node, LSN, membership epoch of the batch).
    in_flight: Vec<(usize, u64, u64)>,
    /// Acks on the way: (node, SCL).
    acks: Vec<(usize, u64)>,
    /// The writer was refused by a node of this epoch.
    stale: u64,
    phase: Phase,
    /// Mutations the test checks it would catch (see the last test).
    hydrate_from_one: bool,
    allocated: u64,
    now: Instant,
}

impl World {
    fn new() -> World {
        let mut nodes = vec![Node::default(); 8];
        for n in &mut nodes[1..=6] {
            n.epoch = 1;
            n.alive = true;
        }
        nodes[TO].alive = true;
        let cfg = QuorumConfig {
            retain_after_quorum: Duration::from_hours(1),
            ..QuorumConfig::default()
        };
        let mut core = QuorumCore::new(cfg, Lsn::NONE);
        core.add_pg(PG, sets_of(1), Lsn::NONE);
        World {
            nodes,
            core,
            in_flight: Vec::new(),
            acks: Vec::new(),
            stale: 0,
            phase: Phase::Step1,
            hydrate_from_one: false,
            allocated: 0,
            now: Instant::now(),
        }
    }

    fn writer_epoch(&self) -> u64 {
        self.core.membership(PG).expect("registered").epoch.0
    }

    fn allocate(&mut self) {
        let a = self.core.allocate(PG, true, 1, self.now).expect("room");
        self.allocated = a.lsn.0;
        let epoch = self.writer_epoch();
        for n in self.core.membership(PG).unwrap().nodes() {
            self.in_flight.push((n.0 as usize, a.lsn.0, epoch));
        }
    }

    /// A node takes a batch of one record, or refuses it (an older membership epoch).
    fn deliver(&mut self, i: usize) {
        let (n, lsn, epoch) = self.in_flight.swap_remove(i);
        let node = &mut self.nodes[n];
        if !node.alive || node.epoch == 0 {
            return;
        }
        if epoch < node.epoch {
            self.stale = self.stale.max(node.epoch);
            return;
        }
        node.held.insert(lsn);
        self.acks.push((n, node.scl()));
    }

    fn ack(&mut self, i: usize) {
        let (n, scl) = self.acks.swap_remove(i);
        self.core.on_ack(PG, NodeId(n as u32), Lsn(scl));
    }

    /// The writer learns the newest membership a live node holds and resends what each
    /// node of it has not acknowledged.
    fn refresh(&mut self) {
        let newest = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.epoch)
            .max()
            .unwrap();
        if newest <= self.writer_epoch() {
            return;
        }
        self.core.set_membership(PG, sets_of(newest));
        self.stale = 0;
        // What is committed may already have left the writer's memory (it keeps records
        // for a while after their quorum): resend only what is not, as the worst case.
        let pgcl = self.core.pgcl(PG).unwrap().0;
        for n in sets_of(newest).nodes() {
            let scl = self.core.member_scl(PG, n).unwrap().0;
            for lsn in scl.max(pgcl) + 1..=self.allocated {
                self.in_flight.push((n.0 as usize, lsn, newest));
            }
        }
    }

    fn holding(&self, epoch: u64) -> impl Fn(NodeId) -> bool + '_ {
        move |n: NodeId| self.nodes[n.0 as usize].epoch >= epoch
    }

    /// One operator action: raise one more node, or measure, hydrate, finish.
    fn operate(&mut self, pick: usize) {
        match self.phase {
            Phase::Step1 => {
                let todo: Vec<usize> = (1..=7)
                    .filter(|n| self.nodes[*n].alive && self.nodes[*n].epoch < 2)
                    .collect();
                if let Some(&n) = todo.get(pick % todo.len().max(1)) {
                    self.nodes[n].epoch = 2;
                }
                let has = self.holding(2);
                if sets_of(1).write_quorum(&has) && sets_of(2).write_quorum(&has) {
                    let at_two: Vec<u64> = OLD
                        .iter()
                        .filter(|n| self.nodes[n.0 as usize].alive && has(**n))
                        .map(|n| self.nodes[n.0 as usize].scl())
                        .collect();
                    drop(has);
                    let target = if self.hydrate_from_one {
                        at_two[pick % at_two.len()]
                    } else {
                        // 3 of them, as the admin command requires.
                        let start = pick % at_two.len();
                        (0..3)
                            .map(|k| at_two[(start + k) % at_two.len()])
                            .max()
                            .unwrap()
                    };
                    self.phase = Phase::Hydrate { target };
                }
            }
            Phase::Hydrate { target } => {
                // Gossip from the old node with the highest SCL: it holds everything up
                // to it.
                self.nodes[TO].held.extend(1..=target);
                self.phase = Phase::Step3;
            }
            Phase::Step3 => {
                let todo: Vec<usize> = (1..=7)
                    .filter(|n| self.nodes[*n].alive && self.nodes[*n].epoch < 3)
                    .collect();
                if let Some(&n) = todo.get(pick % todo.len().max(1)) {
                    self.nodes[n].epoch = 3;
                }
                let has = self.holding(3);
                if sets_of(2).write_quorum(&has) && sets_of(3).write_quorum(&has) {
                    drop(has);
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// Runs `steps` (action, pick) pairs, then delivers what is left and finishes the
    /// operator's steps. Returns the LSNs committed and held by fewer than 4 of the final
    /// set.
    fn run(mut self, steps: &[(u8, usize)], kill_at: usize) -> Vec<u64> {
        for (i, (action, pick)) in steps.iter().enumerate() {
            if i == kill_at {
                self.nodes[FROM].alive = false;
            }
            // Mostly deliveries (6 per record) and acks; the operator acts now and then.
            match action % 16 {
                0 | 1 if self.allocated < 400 => self.allocate(),
                2..=9 if !self.in_flight.is_empty() => {
                    let at = pick % self.in_flight.len();
                    self.deliver(at);
                }
                10..=13 if !self.acks.is_empty() => {
                    let at = pick % self.acks.len();
                    self.ack(at);
                }
                14 if self.stale > 0 => self.refresh(),
                15 if pick % 4 == 0 => self.operate(pick / 4),
                _ => {}
            }
        }
        let mut rounds = 0;
        while self.phase != Phase::Done || !self.in_flight.is_empty() || !self.acks.is_empty() {
            rounds += 1;
            assert!(rounds < 100_000, "the model did not settle");
            self.operate(rounds);
            while !self.in_flight.is_empty() {
                self.deliver(0);
            }
            while !self.acks.is_empty() {
                self.ack(0);
            }
            if self.stale > 0 {
                self.refresh();
            }
        }
        let vdl = self.core.vdl().0;
        (1..=vdl)
            .filter(|lsn| {
                NEW.iter()
                    .filter(|n| self.nodes[n.0 as usize].held.contains(lsn))
                    .count()
                    < 4
            })
            .collect()
    }
}

fn steps() -> impl Strategy<Value = Vec<(u8, usize)>> {
    proptest::collection::vec((any::<u8>(), any::<usize>()), 50..600)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_commit_is_on_4_of_the_new_set_after_a_replacement(steps in steps(), kill_at in 0usize..800) {
        let short = World::new().run(&steps, kill_at);
        prop_assert!(short.is_empty(), "committed but on fewer than 4 of the new set: {:?}", short);
    }
}

/// The model can fail: with the hydration target taken from one old-set node instead of
/// three, some run commits a record that the new set holds on 3 nodes only.
#[test]
fn a_hydration_target_from_one_node_loses_commits_in_some_run() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let found = (0..2000).any(|_| {
        let s = steps().new_tree(&mut runner).unwrap().current();
        let kill = (0usize..800).new_tree(&mut runner).unwrap().current();
        let mut w = World::new();
        w.hydrate_from_one = true;
        !w.run(&s, kill).is_empty()
    });
    assert!(found, "no run showed the weaker target losing a commit");
}
