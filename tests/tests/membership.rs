//! Membership change on real nodes (issue #6, DESIGN §8): 7 nodes, 2 + 2 + 3 in three AZs;
//! PG 0 of the volume lives on 6 of them, and the 7th (G, in the AZ with 3) is spare.
//!
//! - Under continuous commits (PG 0 and PG 1 by turns, 16 in flight), member F of that AZ
//!   is killed and `hexad-node admin replace --from F --to G` runs. Every commit must
//!   succeed; afterwards every record of PG 0 the writer had acknowledged is on at least 4
//!   members of the new set, the writer counts with the new set, G serves pages
//!   byte-identical to a peer, a fresh open finds the new membership and every
//!   acknowledged commit, and F, restarted, learns it is out.
//! - A replacement whose newcomer cannot hydrate (`SIGSTOP`) stops in its transitional
//!   step with a clear error; a new writer opens the volume in that state (F dead, G
//!   stopped) and keeps every acknowledged commit; `admin revert` then takes the PG back to
//!   its old set while commits go on, and the writer follows.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::membership::{MemberSets, Members, Membership};
use hexad_client::placement::ClusterMap;
use hexad_client::volume::{Volume, VolumeConfig};
use hexad_client::wire::{ErrorCode, IndexEntry, Message};
use hexad_client::{Lsn, MembershipEpoch, NodeId, PageNo, PgIndex, VolumeId};
use hexad_tests::{counter_changes, fresh_dir, get_page, run_with_output, Cluster, NodeOpts};

const PGS: [PgIndex; 2] = [PgIndex(0), PgIndex(1)];
const PAGES: u64 = 200;
/// Mini-transactions in flight.
const DEPTH: usize = 16;
const BOUND: Duration = Duration::from_mins(1);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

/// What the writer thread did.
struct Written {
    /// LSNs of PG 0's records whose commits were acknowledged.
    acked_pg0: Vec<Lsn>,
    /// The last acknowledged commit.
    last: Lsn,
    failures: Vec<String>,
    membership: MemberSets,
    /// What the writer's open recovered.
    recovered_vdl: Lsn,
    opened_with: MemberSets,
}

/// A writer committing on its own executor thread until told to stop.
struct Writer {
    commits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Written>,
}

impl Writer {
    fn start(map: ClusterMap, volume: VolumeId) -> Writer {
        let commits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (commits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            LocalExecutorBuilder::new(Placement::Unbound)
                .make()
                .unwrap()
                .run(write(map, volume, c, s))
        });
        Writer {
            commits,
            stop,
            thread,
        }
    }

    /// Waits (bounded) until `n` commits were acknowledged in all.
    fn wait_for(&self, n: u64) {
        let started = Instant::now();
        while self.commits.load(Ordering::Relaxed) < n {
            assert!(
                started.elapsed() < BOUND,
                "only {} of {n} commits after {BOUND:?}",
                self.commits.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn finish(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("writer thread")
    }
}

/// Commits mini-transactions (16 bytes written at offset 8 and a counter added at offset 0
/// of one page), PG 0 and PG 1 by turns, `DEPTH` in flight, until `stop`.
async fn write(
    map: ClusterMap,
    volume: VolumeId,
    commits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Written {
    let vol = Volume::open(map, VolumeConfig::new(volume))
        .await
        .expect("open");
    // Keep every record in the nodes' logs, so the test can find each one afterwards.
    vol.set_min_read_point(Some(Lsn::NONE));
    let mut pending: VecDeque<(Lsn, bool)> = VecDeque::default();
    let mut out = Written {
        acked_pg0: Vec::new(),
        last: Lsn::NONE,
        failures: Vec::new(),
        membership: vol.membership(PgIndex(0)),
        recovered_vdl: vol.recovery().vdl,
        opened_with: vol.membership(PgIndex(0)),
    };
    let mut seq = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if pending.len() >= DEPTH || (stopping && !pending.is_empty()) {
            let (lsn, in_pg0) = pending.pop_front().expect("non-empty");
            match vol.wait_durable(lsn).await {
                Ok(()) => {
                    if in_pg0 {
                        out.acked_pg0.extend([Lsn(lsn.0 - 1), lsn]);
                    }
                    out.last = lsn;
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => out.failures.push(format!("commit {lsn}: {e}")),
            }
            continue;
        }
        if stopping {
            break;
        }
        let pg = PGS[(seq % 2) as usize];
        let page = PageNo(pg.first_page().0 + (seq / 2) % PAGES);
        match vol.append(&counter_changes(page, seq)).await {
            Ok(lsn) => pending.push_back((lsn, pg == PgIndex(0))),
            Err(e) => out.failures.push(format!("append {seq}: {e}")),
        }
        seq += 1;
    }
    out.membership = vol.membership(PgIndex(0));
    out
}

/// The LSNs of every record of PG 0 node `id` holds.
fn held(cluster: &Cluster, id: u32, volume: VolumeId) -> BTreeSet<Lsn> {
    let mut conn = cluster.node(id).connect(0);
    let mut out = BTreeSet::new();
    let mut after = Lsn::NONE;
    loop {
        match conn
            .call(&Message::FetchIndex {
                volume,
                pg: PgIndex(0),
                after_lsn: after,
                to_lsn: Lsn(u64::MAX),
                max_entries: 1 << 18,
            })
            .unwrap()
        {
            Message::Index { entries, more, .. } => {
                after = entries.last().map_or(after, |e: &IndexEntry| e.lsn);
                out.extend(entries.iter().map(|e| e.lsn));
                if !more {
                    return out;
                }
            }
            other => panic!("node {id}: {other:?}"),
        }
    }
}

fn membership_of(cluster: &Cluster, id: u32, volume: VolumeId) -> Membership {
    match cluster
        .node(id)
        .connect(0)
        .call(&Message::GetMembership {
            volume,
            pg: PgIndex(0),
        })
        .unwrap()
    {
        Message::MembershipIs { membership, .. } => membership,
        other => panic!("node {id}: {other:?}"),
    }
}

/// Node F (a PG 0 member in the AZ with 3 nodes) and G (the spare there), PG 0's set, and
/// that set with G in place of F.
fn pick(map: &ClusterMap, volume: VolumeId) -> (u32, u32, [NodeId; 6], [NodeId; 6]) {
    let members = map.pg_members(volume, PgIndex(0));
    let spare = (5..=7).find(|n| !members.contains(&NodeId(*n))).unwrap();
    let from = (5..=7).find(|n| members.contains(&NodeId(*n))).unwrap();
    let new = members.map(|n| if n.0 == from { NodeId(spare) } else { n });
    (from, spare, members, new)
}

fn admin(cluster: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let file = cluster.file.display().to_string();
    let mut all = vec!["admin"];
    all.extend_from_slice(&args[..1]);
    all.extend_from_slice(&["--cluster", &file]);
    all.extend_from_slice(&args[1..]);
    let (code, out) = run_with_output(&bin(), &all, BOUND);
    eprintln!("hexad-node {all:?} -> {code:?}\n{out}");
    (code, out)
}

#[test]
fn a_failed_node_is_replaced_under_load_with_no_failed_commit() {
    let volume = VolumeId(61);
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "membership-replace");
    let mut cluster = Cluster::start_sized(&bin(), &dir, &[2, 2, 3], &NodeOpts::default());
    let map = cluster.map();
    let (from, to, _old, new) = pick(&map, volume);
    let writer = Writer::start(map.clone(), volume);
    writer.wait_for(2_000);
    cluster.kill(from);
    writer.wait_for(writer.count() + 2_000);
    let before = writer.count();
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let (code, out) = admin(
        &cluster,
        &[
            "replace", "--volume", "61", "--pg", "0", "--from", &from_s, "--to", &to_s,
        ],
    );
    assert_eq!(code, Some(0), "admin replace failed:\n{out}");
    assert!(out.contains("step 2/3") && out.contains("done"), "{out}");
    let during = writer.count() - before;
    writer.wait_for(writer.count() + 2_000);
    let written = writer.finish();
    assert!(
        written.failures.is_empty(),
        "failed commits: {:?}",
        written.failures
    );
    eprintln!(
        "{} commits to PG 0 acknowledged; {during} commits (both PGs) while the admin command ran; last LSN {}",
        written.acked_pg0.len() / 2,
        written.last
    );
    assert!(during > 0, "commits went on during the replacement");
    assert_eq!(
        written.membership,
        MemberSets::stable(MembershipEpoch(3), new),
        "the writer counts with the new set"
    );
    // Every acknowledged record of PG 0 is on at least 4 members of the new set.
    let holdings: Vec<(NodeId, BTreeSet<Lsn>)> = new
        .iter()
        .map(|n| (*n, held(&cluster, n.0, volume)))
        .collect();
    for lsn in &written.acked_pg0 {
        let on: Vec<NodeId> = holdings
            .iter()
            .filter(|(_, h)| h.contains(lsn))
            .map(|(n, _)| *n)
            .collect();
        assert!(on.len() >= 4, "LSN {lsn} is only on {on:?} of {new:?}");
    }
    let g_held = holdings.iter().find(|(n, _)| n.0 == to).unwrap();
    eprintln!(
        "{} acknowledged records of PG 0 each on >= 4 of {new:?}; node {to} holds {}",
        written.acked_pg0.len(),
        g_held.1.len()
    );
    // G serves the same pages as a member that was there all along.
    let peer = new.iter().find(|n| n.0 != to).unwrap().0;
    let complete = written.acked_pg0.iter().copied().max().unwrap();
    for i in 0..PAGES {
        let p = PageNo(i);
        let (mine, theirs) = (
            get_page(cluster.node(to), volume, p, written.last, complete),
            get_page(cluster.node(peer), volume, p, written.last, complete),
        );
        match (&mine, &theirs) {
            (Message::Page { data: a, .. }, Message::Page { data: b, .. }) => {
                assert_eq!(a, b, "page {p}: node {to} differs from node {peer}");
            }
            _ => panic!("page {p}: node {to} {mine:?}, node {peer} {theirs:?}"),
        }
    }
    // F comes back: it learns from its peers that it is out, and the PG does not need it.
    cluster.restart(from);
    let started = Instant::now();
    loop {
        let m = membership_of(&cluster, from, volume);
        if m.epoch == MembershipEpoch(3) {
            assert_eq!(m.members, Members::Stable(new));
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "node {from} still at {m:?} after {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Out of the PG, it coalesces what it holds, so its records leave the hot log...
    let started = Instant::now();
    loop {
        let stat = match cluster
            .node(from)
            .connect(0)
            .call(&Message::GetSegmentStats)
            .unwrap()
        {
            Message::SegmentStats { segments } => segments
                .into_iter()
                .find(|s| s.volume == volume && s.pg == PgIndex(0))
                .expect("node F keeps the segment"),
            other => panic!("node {from}: {other:?}"),
        };
        if stat.floor >= stat.scl && stat.scl > Lsn::NONE {
            eprintln!("node {from}, out of the PG: {stat:?}");
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "node {from} did not coalesce its retired segment: {stat:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and answers no reads.
    let refused = get_page(
        cluster.node(from),
        volume,
        PageNo(0),
        written.last,
        complete,
    );
    assert!(
        matches!(
            refused,
            Message::Error {
                code: ErrorCode::StaleMembership,
                ..
            }
        ),
        "node {from}: {refused:?}"
    );
    // A fresh open finds the new membership and every acknowledged commit.
    let last = written.last;
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let vol = Volume::open(map, VolumeConfig::new(volume))
                .await
                .expect("reopen");
            assert_eq!(
                vol.membership(PgIndex(0)),
                MemberSets::stable(MembershipEpoch(3), new)
            );
            assert!(
                vol.recovery().vdl >= last,
                "recovered VDL {} below the last acknowledged commit {last}",
                vol.recovery().vdl
            );
        });
}

#[test]
fn a_stuck_replacement_is_opened_through_and_reverted_while_commits_go_on() {
    let volume = VolumeId(62);
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "membership-revert");
    let mut cluster = Cluster::start_sized(&bin(), &dir, &[2, 2, 3], &NodeOpts::default());
    let map = cluster.map();
    let (from, to, old, new) = pick(&map, volume);
    let first = Writer::start(map.clone(), volume);
    first.wait_for(1_000);
    // G cannot hydrate while stopped: the replacement stops in its transitional step.
    cluster.kill(from);
    cluster.signal(to, nix::sys::signal::Signal::SIGSTOP);
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let (code, out) = admin(
        &cluster,
        &[
            "replace",
            "--volume",
            "62",
            "--pg",
            "0",
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--timeout-s",
            "8",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stays transitional"), "{out}");
    first.wait_for(first.count() + 500);
    let first = first.finish();
    assert!(
        first.failures.is_empty(),
        "failed commits: {:?}",
        first.failures
    );
    let transitional = MemberSets {
        epoch: MembershipEpoch(2),
        old,
        new: Some(new),
    };
    assert_eq!(first.membership, transitional, "the writer followed step 1");
    // A new writer opens the volume while it is transitional, F dead and G stopped: 4 of
    // each set answer, and the open keeps every acknowledged commit.
    let second = Writer::start(map, volume);
    second.wait_for(500);
    // F is back; the operator reverts.
    cluster.signal(to, nix::sys::signal::Signal::SIGCONT);
    cluster.restart(from);
    let (code, out) = admin(&cluster, &["revert", "--volume", "62", "--pg", "0"]);
    assert_eq!(code, Some(0), "{out}");
    second.wait_for(second.count() + 1_000);
    let second = second.finish();
    assert!(
        second.failures.is_empty(),
        "failed commits: {:?}",
        second.failures
    );
    assert_eq!(second.opened_with, transitional);
    assert!(
        second.recovered_vdl >= first.last,
        "the open recovered VDL {} below the first writer's last commit {}",
        second.recovered_vdl,
        first.last
    );
    assert_eq!(
        second.membership,
        MemberSets::stable(MembershipEpoch(3), old),
        "the writer is back on the old set"
    );
    // G took the revert too: it is out and says so.
    assert_eq!(
        membership_of(&cluster, to, volume),
        Membership {
            epoch: MembershipEpoch(3),
            members: Members::Stable(old)
        }
    );
    // A batch of the transitional epoch is refused now.
    let reply = cluster
        .node(old[0].0)
        .connect(0)
        .call(&Message::AppendBatch {
            volume,
            pg: PgIndex(0),
            volume_epoch: hexad_client::VolumeEpoch(u64::MAX),
            membership_epoch: MembershipEpoch(2),
            records: vec![hexad_tests::test_record(PgIndex(0), 1 << 40, 0, 16)],
        })
        .unwrap();
    assert!(
        matches!(
            reply,
            Message::Error {
                code: ErrorCode::StaleMembership,
                detail: 3,
                ..
            }
        ),
        "{reply:?}"
    );
    let holdings: Vec<BTreeSet<Lsn>> = old.iter().map(|n| held(&cluster, n.0, volume)).collect();
    let short: Vec<Lsn> = first
        .acked_pg0
        .iter()
        .chain(&second.acked_pg0)
        .copied()
        .filter(|l| holdings.iter().filter(|h| h.contains(l)).count() < 4)
        .take(5)
        .collect();
    assert!(
        short.is_empty(),
        "acknowledged records on fewer than 4 of {old:?}: {short:?}"
    );
}
