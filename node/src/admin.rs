//! `hexad-node admin`: operator commands against a running cluster.
//!
//! `replace` moves a PG from node F to node G in the two membership steps of DESIGN §8
//! (`hexad_client::membership` has the argument), printing where it stands each second:
//!
//! ```text
//!  learn    GetMembership from the members (newest epoch wins); resume a replacement of
//!           F by G already in its transitional step
//!  step 1   SetMembership(e+1, ABCDEF → ABCDEG) to ABCDEF and G, until 4 of each set took it;
//!           X = the highest SCL among 3 or more old-set nodes holding e+1
//!  step 2   G hydrates (gossip, or a rebuild from a peer's page baseline) until its SCL ≥ X
//!  step 3   SetMembership(e+2, ABCDEG) to ABCDEG and F, until 4 of each set of e+1 and 4 of
//!           ABCDEG took it
//! ```
//! `revert` ends a transitional membership back on its old set (F came back); `show`
//! prints each member's view. Writers keep committing throughout: a node that took a step
//! refuses the epoch before, and the writer learns the new one (`StaleMembership`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hexad_client::blocking::Connection;
use hexad_client::membership::{MemberSets, Membership};
use hexad_client::placement::{segment_shard, ClusterMap, NodeEntry};
use hexad_client::wire::{ErrorCode, Message, RebuildPhase};
use hexad_client::{Lsn, NodeId, PgIndex, ShardId, VolumeId};

use crate::config::ClusterConfig;

/// How often a waiting step asks again and prints progress.
const POLL: Duration = Duration::from_secs(1);
/// Connect and reply timeout per node.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Replace node FROM with node TO in one PG, under load (two membership epochs).
    Replace(ReplaceArgs),
    /// End a replacement that is still transitional, back on the set it started from.
    Revert(PgArgs),
    /// Print each member's membership and SCL for one PG.
    Show(PgArgs),
}

#[derive(Debug, Args)]
pub struct PgArgs {
    /// The cluster file (every node, old and new, must be in it).
    #[arg(long)]
    pub cluster: PathBuf,
    #[arg(long)]
    pub volume: u64,
    #[arg(long)]
    pub pg: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

#[derive(Debug, Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    /// The node leaving the PG.
    #[arg(long)]
    pub from: u32,
    /// The node joining it.
    #[arg(long)]
    pub to: u32,
    /// Allow TO to be in another AZ than FROM (the PG then has 3 nodes in one AZ).
    #[arg(long)]
    pub allow_az_change: bool,
}

/// Runs an admin command; errors are one line.
pub fn run(cmd: &AdminCommand) -> Result<(), String> {
    match cmd {
        AdminCommand::Replace(a) => {
            let mut t = Target::new(&a.pg)?;
            t.replace(NodeId(a.from), NodeId(a.to), a.allow_az_change)
        }
        AdminCommand::Revert(a) => Target::new(a)?.revert(),
        AdminCommand::Show(a) => Target::new(a)?.show(),
    }
}

/// One PG of one volume in a cluster, and connections to its nodes' owning shards.
struct Target {
    cluster: ClusterMap,
    volume: VolumeId,
    pg: PgIndex,
    deadline: Instant,
    started: Instant,
    conns: BTreeMap<NodeId, Connection>,
}

/// What one node answered.
#[derive(Debug, Clone)]
enum Answer {
    Is(Membership, Lsn),
    Stale(String),
    Down(String),
}

impl Target {
    fn new(a: &PgArgs) -> Result<Target, String> {
        let file = ClusterConfig::load(&a.cluster).map_err(|e| e.to_string())?;
        let entries: Vec<NodeEntry> = file
            .nodes
            .iter()
            .map(|n| NodeEntry {
                shards: n.shards.or(file.defaults.shards),
                ..n.clone()
            })
            .collect();
        let cluster = ClusterMap::new(entries).map_err(|e| e.to_string())?;
        if a.pg >= hexad_client::MAX_PGS {
            return Err(format!(
                "--pg {} is beyond the largest volume ({} PGs)",
                a.pg,
                hexad_client::MAX_PGS
            ));
        }
        Ok(Target {
            cluster,
            volume: VolumeId(a.volume),
            pg: PgIndex(a.pg),
            deadline: Instant::now() + Duration::from_secs(a.timeout_s),
            started: Instant::now(),
            conns: BTreeMap::new(),
        })
    }

    fn placement(&self) -> [NodeId; 6] {
        self.cluster.pg_members(self.volume, self.pg)
    }

    fn elapsed(&self) -> String {
        format!("{:6.1} s", self.started.elapsed().as_secs_f64())
    }

    /// The address of the shard of `node` that owns the segment (the shard count from the
    /// cluster file, else from the node's handshake).
    fn addr(&self, node: NodeId) -> Result<SocketAddr, String> {
        let entry = self
            .cluster
            .node(node)
            .ok_or_else(|| format!("node {node} is not in the cluster file"))?;
        let shards = if let Some(s) = entry.shards {
            s
        } else {
            let mut c = Connection::connect(entry.shard_addr(ShardId(0)), NODE_TIMEOUT)
                .map_err(|e| conn_error(&e))?;
            match c.hello().map_err(|e| conn_error(&e))? {
                Message::HelloOk { shard_ports, .. } => shard_ports.len() as u16,
                other => return Err(format!("hello: {other:?}")),
            }
        };
        Ok(entry.shard_addr(segment_shard(self.volume, self.pg, shards)))
    }

    /// Sends `msg` to `node` (connecting if needed); a broken connection is dropped.
    fn call(&mut self, node: NodeId, msg: &Message) -> Answer {
        if !self.conns.contains_key(&node) {
            let conn = self
                .addr(node)
                .and_then(|a| Connection::connect(a, NODE_TIMEOUT).map_err(|e| conn_error(&e)));
            match conn {
                Ok(c) => {
                    self.conns.insert(node, c);
                }
                Err(e) => return Answer::Down(e),
            }
        }
        let conn = self.conns.get_mut(&node).expect("connected above");
        match conn.call(msg) {
            Ok(Message::MembershipIs {
                membership, scl, ..
            }) => Answer::Is(membership, scl),
            Ok(Message::Error {
                code: ErrorCode::StaleMembership,
                message,
                ..
            }) => Answer::Stale(message),
            Ok(other) => Answer::Down(format!("{other:?}")),
            Err(e) => {
                self.conns.remove(&node);
                Answer::Down(conn_error(&e))
            }
        }
    }

    /// The newest membership the PG's nodes hold (two rounds: a transitional membership
    /// names newcomers), with every answer.
    fn learn(&mut self) -> Result<(MemberSets, BTreeMap<NodeId, Answer>), String> {
        let placement = self.placement();
        let mut best = MemberSets::stable(hexad_client::MembershipEpoch::PLACEMENT, placement);
        let mut answers = BTreeMap::new();
        let ask = Message::GetMembership {
            volume: self.volume,
            pg: self.pg,
        };
        for _ in 0..2 {
            for node in best.nodes() {
                if answers.contains_key(&node) {
                    continue;
                }
                let a = self.call(node, &ask);
                if let Answer::Is(m, _) = a {
                    let sets = m.resolve(placement);
                    if sets.epoch > best.epoch {
                        if let Some(n) = sets
                            .nodes()
                            .into_iter()
                            .find(|n| self.cluster.node(*n).is_none())
                        {
                            return Err(format!(
                                "node {node} holds membership epoch {} naming node {n}, which the cluster file lacks",
                                sets.epoch
                            ));
                        }
                        best = sets;
                    }
                }
                answers.insert(node, a);
            }
        }
        let read = |n: NodeId| matches!(answers.get(&n), Some(Answer::Is(..)));
        if !best.read_quorum(read) {
            return Err(format!(
                "volume {} pg {}: only {} of its members answered (3 of its set are needed to know its membership): {}",
                self.volume,
                self.pg,
                best.old.iter().filter(|n| read(**n)).count(),
                describe(&answers)
            ));
        }
        Ok((best, answers))
    }

    fn show(&mut self) -> Result<(), String> {
        let (m, answers) = self.learn()?;
        println!(
            "volume {} pg {}: membership epoch {} {}",
            self.volume,
            self.pg,
            m.epoch,
            sets_text(&m)
        );
        for (node, a) in &answers {
            match a {
                Answer::Is(theirs, scl) => println!(
                    "  node {node}: epoch {} {:?}, SCL {scl}",
                    theirs.epoch, theirs.members
                ),
                Answer::Stale(e) | Answer::Down(e) => println!("  node {node}: {e}"),
            }
        }
        Ok(())
    }

    /// Sends `target` to `to` until every set of `replaced` and of `target` has 4 nodes
    /// that hold it; returns the SCL each of those reported.
    fn step(
        &mut self,
        replaced: &MemberSets,
        target: &MemberSets,
        to: &[NodeId],
    ) -> Result<BTreeMap<NodeId, Lsn>, String> {
        let msg = Message::SetMembership {
            volume: self.volume,
            pg: self.pg,
            membership: target.to_membership(),
        };
        let mut took: BTreeMap<NodeId, Lsn> = BTreeMap::new();
        loop {
            let mut answers = BTreeMap::new();
            for node in to {
                if took.contains_key(node) {
                    continue;
                }
                let a = self.call(*node, &msg);
                match &a {
                    Answer::Is(m, scl) if *m == target.to_membership() => {
                        took.insert(*node, *scl);
                    }
                    Answer::Is(m, _) if m.epoch >= target.epoch => {
                        return Err(format!(
                            "node {node} holds membership epoch {} {:?}: another change is under way; run `admin show`",
                            m.epoch, m.members
                        ));
                    }
                    Answer::Stale(e) => {
                        return Err(format!(
                            "node {node} refused epoch {}: {e}; another change is under way",
                            target.epoch
                        ))
                    }
                    _ => {}
                }
                answers.insert(*node, a);
            }
            let has = |n: NodeId| took.contains_key(&n);
            if replaced.write_quorum(has) && target.write_quorum(has) {
                return Ok(took);
            }
            if Instant::now() >= self.deadline {
                return Err(format!(
                    "epoch {} reached {} nodes ({:?}), short of 4 of every set; not answering: {}",
                    target.epoch,
                    took.len(),
                    took.keys().collect::<Vec<_>>(),
                    describe(&answers)
                ));
            }
            println!(
                "{}  epoch {} on {} nodes, waiting for 4 of every set; not yet: {}",
                self.elapsed(),
                target.epoch,
                took.len(),
                describe(&answers)
            );
            std::thread::sleep(POLL);
        }
    }

    fn replace(&mut self, from: NodeId, to: NodeId, allow_az_change: bool) -> Result<(), String> {
        let (f, g) = (
            self.cluster
                .node(from)
                .ok_or_else(|| format!("--from {from}: no such node in the cluster file"))?,
            self.cluster
                .node(to)
                .ok_or_else(|| format!("--to {to}: no such node in the cluster file"))?,
        );
        if f.az != g.az && !allow_az_change {
            return Err(format!(
                "node {from} is in AZ {}, node {to} in AZ {}: the PG would have 3 nodes in one AZ (pass --allow-az-change to do it anyway)",
                f.az, g.az
            ));
        }
        let (current, _) = self.learn()?;
        let plan = plan_replace(&current, from, to)
            .map_err(|e| format!("volume {} pg {}: {e}", self.volume, self.pg))?;
        let transitional = plan.transitional;
        // Old-set nodes holding the transitional epoch, with the SCL each answered.
        let mut measured: BTreeMap<NodeId, Lsn> = BTreeMap::new();
        if plan.resume {
            println!(
                "{}  resuming: epoch {} {} is in place",
                self.elapsed(),
                transitional.epoch,
                sets_text(&transitional)
            );
        } else {
            println!(
                "{}  step 1/3: transitional membership epoch {}: {}",
                self.elapsed(),
                transitional.epoch,
                sets_text(&transitional)
            );
            let mut to_ask = current.old.to_vec();
            to_ask.push(to);
            measured = self.step(&current, &transitional, &to_ask)?;
        }
        let target_scl = self.hydration_target(&transitional, measured)?;
        println!(
            "{}  step 2/3: node {to} hydrates to SCL {target_scl} (the highest SCL of the old set's nodes at epoch {})",
            self.elapsed(),
            transitional.epoch
        );
        self.hydrate(to, target_scl)?;
        let last = plan.last;
        let swapped = last.old;
        println!(
            "{}  step 3/3: membership epoch {}: {}",
            self.elapsed(),
            last.epoch,
            sets_text(&last)
        );
        let mut to_ask = swapped.to_vec();
        to_ask.push(from);
        self.step(&transitional, &last, &to_ask)?;
        println!(
            "{}  done: volume {} pg {} is held by {} at membership epoch {}",
            self.elapsed(),
            self.volume,
            self.pg,
            sets_text(&last),
            last.epoch
        );
        Ok(())
    }

    /// X, what the joining node must hold before the last step: the highest SCL among at
    /// least 3 nodes of the old set that hold the transitional epoch (`measured` has those
    /// step 1 heard from). A record committed by the old set's rule has 4 acks in it, so one
    /// of any 3 acked it, and did so before it took the new epoch (it refuses the old one
    /// since): its SCL then already covered the record.
    fn hydration_target(
        &mut self,
        transitional: &MemberSets,
        mut measured: BTreeMap<NodeId, Lsn>,
    ) -> Result<Lsn, String> {
        measured.retain(|n, _| transitional.old.contains(n));
        let ask = Message::GetMembership {
            volume: self.volume,
            pg: self.pg,
        };
        loop {
            let mut answers = BTreeMap::new();
            for n in transitional.old {
                let a = self.call(n, &ask);
                if let Answer::Is(m, scl) = &a {
                    if m.epoch >= transitional.epoch {
                        let e = measured.entry(n).or_insert(*scl);
                        *e = (*e).max(*scl);
                    }
                }
                answers.insert(n, a);
            }
            if transitional.read_quorum(|n| measured.contains_key(&n)) {
                return Ok(measured.values().copied().max().unwrap_or(Lsn::NONE));
            }
            if Instant::now() >= self.deadline {
                return Err(format!(
                    "only {} nodes of the old set answered at epoch {} (3 are needed to know what the new node must hold): {}",
                    measured.len(),
                    transitional.epoch,
                    describe(&answers)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `node`'s segment holds every record up to `scl`, printing its progress.
    fn hydrate(&mut self, node: NodeId, scl: Lsn) -> Result<(), String> {
        loop {
            let (now, detail) = self.segment_progress(node);
            if now.is_some_and(|s| s >= scl) {
                println!(
                    "{}  node {node}: SCL {} ≥ {scl}: hydrated{detail}",
                    self.elapsed(),
                    now.unwrap_or_default()
                );
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                return Err(format!(
                    "node {node} did not reach SCL {scl} in time (now {now:?}{detail}); the PG stays transitional: run replace again to resume, or revert"
                ));
            }
            println!(
                "{}  node {node}: SCL {} of {scl}{detail}",
                self.elapsed(),
                now.map_or("?".to_string(), |s| s.to_string())
            );
            std::thread::sleep(POLL);
        }
    }

    /// `node`'s SCL for the segment, and a few words on its rebuild and gossip.
    fn segment_progress(&mut self, node: NodeId) -> (Option<Lsn>, String) {
        let Some(conn) = self.conns.get_mut(&node) else {
            let a = self.call(
                node,
                &Message::GetMembership {
                    volume: self.volume,
                    pg: self.pg,
                },
            );
            return match a {
                Answer::Is(_, scl) => (Some(scl), String::new()),
                Answer::Stale(e) | Answer::Down(e) => (None, format!(" ({e})")),
            };
        };
        match conn.call(&Message::GetSegmentStats) {
            Ok(Message::SegmentStats { segments }) => {
                let Some(s) = segments
                    .iter()
                    .find(|s| s.volume == self.volume && s.pg == self.pg)
                else {
                    return (None, " (no segment yet)".into());
                };
                let phase = match s.rebuild {
                    RebuildPhase::None => String::new(),
                    RebuildPhase::Copying => format!(
                        ", rebuilding: {} page versions, {:.1} MB copied",
                        s.rebuild_pages,
                        s.rebuild_bytes as f64 / 1e6
                    ),
                    RebuildPhase::CatchingUp => ", rebuilt, pulling the records above".into(),
                };
                (
                    Some(s.scl),
                    format!(
                        " (gossip: {} records, {:.1} MB; {} holes{phase})",
                        s.gossip_records,
                        s.gossip_bytes as f64 / 1e6,
                        s.holes
                    ),
                )
            }
            Ok(other) => (None, format!(" ({other:?})")),
            Err(e) => {
                self.conns.remove(&node);
                (None, format!(" ({})", conn_error(&e)))
            }
        }
    }

    fn revert(&mut self) -> Result<(), String> {
        let (current, _) = self.learn()?;
        if current.new.is_none() {
            return Err(format!(
                "volume {} pg {} is not in a replacement (epoch {}: {:?}); nothing to revert",
                self.volume, self.pg, current.epoch, current.old
            ));
        }
        let back = MemberSets::stable(current.epoch.next(), current.old);
        println!(
            "{}  reverting {}: membership epoch {}: {}",
            self.elapsed(),
            sets_text(&current),
            back.epoch,
            sets_text(&back)
        );
        self.step(&current, &back, &current.nodes())?;
        println!(
            "{}  done: volume {} pg {} is held by {} at membership epoch {}",
            self.elapsed(),
            self.volume,
            self.pg,
            sets_text(&back),
            back.epoch
        );
        Ok(())
    }
}

/// What `replace` does from the PG's current membership.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplacePlan {
    /// The transitional membership (to put in place, or already there).
    transitional: MemberSets,
    /// It is already there: step 1 is done.
    resume: bool,
    /// The membership after the last step.
    last: MemberSets,
}

/// The steps to replace `from` by `to`, or why not.
fn plan_replace(current: &MemberSets, from: NodeId, to: NodeId) -> Result<ReplacePlan, String> {
    if from == to {
        return Err(format!("--from and --to are both node {from}"));
    }
    let swapped = current.old.map(|n| if n == from { to } else { n });
    let (transitional, resume) = match current.new {
        Some(new) if new == swapped && current.old.contains(&from) => (*current, true),
        Some(new) => {
            return Err(format!(
                "a replacement {:?} -> {new:?} is in progress (epoch {}); finish it or `admin revert` first",
                current.old, current.epoch
            ))
        }
        None if !current.old.contains(&from) => {
            return Err(format!(
                "node {from} is not a member (epoch {}: {:?})",
                current.epoch, current.old
            ))
        }
        None if current.old.contains(&to) => {
            return Err(format!("node {to} is already a member"));
        }
        None => (
            MemberSets {
                epoch: current.epoch.next(),
                old: current.old,
                new: Some(swapped),
            },
            false,
        ),
    };
    Ok(ReplacePlan {
        transitional,
        resume,
        last: MemberSets::stable(transitional.epoch.next(), swapped),
    })
}

/// A connection error in words (a read timeout says so).
fn conn_error(e: &hexad_client::blocking::ConnError) -> String {
    match e {
        hexad_client::blocking::ConnError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!("no reply within {NODE_TIMEOUT:?}")
        }
        other => other.to_string(),
    }
}

fn sets_text(m: &MemberSets) -> String {
    let ids = |s: &[NodeId; 6]| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match &m.new {
        None => format!("[{}]", ids(&m.old)),
        Some(new) => format!("[{}] -> [{}]", ids(&m.old), ids(new)),
    }
}

fn describe(answers: &BTreeMap<NodeId, Answer>) -> String {
    let down: Vec<String> = answers
        .iter()
        .filter_map(|(n, a)| match a {
            Answer::Is(..) => None,
            Answer::Stale(e) | Answer::Down(e) => Some(format!("node {n}: {e}")),
        })
        .collect();
    if down.is_empty() {
        "none".into()
    } else {
        down.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hexad_client::MembershipEpoch;

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

    #[test]
    fn a_replacement_starts_resumes_or_says_why_not() {
        let stable = MemberSets::stable(MembershipEpoch(1), OLD);
        let p = plan_replace(&stable, NodeId(6), NodeId(7)).unwrap();
        assert!(!p.resume);
        assert_eq!(
            p.transitional,
            MemberSets {
                epoch: MembershipEpoch(2),
                old: OLD,
                new: Some(NEW)
            }
        );
        assert_eq!(p.last, MemberSets::stable(MembershipEpoch(3), NEW));
        // Interrupted after step 1: the same command resumes it.
        let again = plan_replace(&p.transitional, NodeId(6), NodeId(7)).unwrap();
        assert!(again.resume);
        assert_eq!(again.last, p.last);
        // Anything else is refused, with the reason.
        let other = plan_replace(&p.transitional, NodeId(5), NodeId(8)).unwrap_err();
        assert!(other.contains("in progress"), "{other}");
        let not_member = plan_replace(&stable, NodeId(9), NodeId(7)).unwrap_err();
        assert!(
            not_member.contains("node 9 is not a member"),
            "{not_member}"
        );
        let member = plan_replace(&stable, NodeId(6), NodeId(2)).unwrap_err();
        assert!(member.contains("node 2 is already a member"), "{member}");
        assert!(plan_replace(&stable, NodeId(6), NodeId(6)).is_err());
        // After the last step, replacing back is a new replacement from epoch 3.
        let back = plan_replace(&p.last, NodeId(7), NodeId(6)).unwrap();
        assert_eq!(back.transitional.epoch, MembershipEpoch(4));
        assert_eq!(back.last, MemberSets::stable(MembershipEpoch(5), OLD));
    }
}
