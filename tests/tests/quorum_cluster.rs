//! The quorum client against 6 real nodes (2 per AZ in 3 AZs): commits need 4 of 6, survive
//! the loss of an AZ, stop (with a clear error, never a false ack) without a quorum, and
//! resume when a node returns.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::placement::ClusterMap;
use hexad_client::volume::{Change, Volume, VolumeConfig, VolumeError};
use hexad_client::wire::{Message, Op};
use hexad_client::{Lsn, PageNo, PgIndex, VolumeId, PG_PAGES};
use hexad_tests::{fresh_dir, Cluster, NodeOpts, IO_TIMEOUT};

const VOLUME: VolumeId = VolumeId(7);
/// Pages in two PGs, so commits fan out to two sets of 6 segments.
const PAGES: [u64; 4] = [1, 2, PG_PAGES + 1, PG_PAGES + 2];
/// Longest a single commit may take while an AZ is lost (request timeout + reconnect).
const STALL_BOUND: Duration = Duration::from_secs(3);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

/// Starts 6 nodes (2 in each of 3 AZs) with small hot logs.
fn six_nodes(name: &str) -> (Rc<RefCell<Cluster>>, ClusterMap) {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name);
    let opts = NodeOpts {
        file_bytes: 4 << 20,
        file_count: 4,
        ..NodeOpts::default()
    };
    let cluster = Cluster::start(&bin(), &dir, 3, 2, &opts);
    let map = cluster.map();
    (Rc::new(RefCell::new(cluster)), map)
}

/// The writer's executor, on the test thread.
fn executor() -> glommio::LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
}

fn change(i: u64) -> Change {
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.extend(std::iter::repeat_n((i % 251) as u8, 196));
    Change {
        page: PageNo(PAGES[(i % 4) as usize]),
        op: Op::WriteBytes,
        payload: Bytes::from(payload),
    }
}

/// `writers` tasks each commit `each` one-record mini-transactions; returns the committed
/// LSNs and the longest commit.
async fn commit_many(
    vol: &Rc<Volume>,
    writers: u64,
    each: u64,
) -> Result<(Vec<Lsn>, Duration), VolumeError> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let vol = vol.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut out = Vec::new();
            let mut worst = Duration::ZERO;
            for i in 0..each {
                let started = Instant::now();
                let lsn = vol.append(&[change(w * 1000 + i)]).await?;
                vol.wait_durable(lsn).await?;
                worst = worst.max(started.elapsed());
                out.push(lsn);
            }
            Ok::<_, VolumeError>((out, worst))
        }));
    }
    let mut all = Vec::new();
    let mut worst = Duration::ZERO;
    for t in tasks {
        let (lsns, w) = t.await?;
        all.extend(lsns);
        worst = worst.max(w);
    }
    Ok((all, worst))
}

/// For each committed LSN, how many of the running nodes hold it.
fn copies(cluster: &Cluster, vol: &Volume, lsns: &[Lsn]) -> BTreeMap<Lsn, usize> {
    let mut held: BTreeMap<Lsn, usize> = lsns.iter().map(|l| (*l, 0)).collect();
    for pg in [PgIndex(0), PgIndex(1)] {
        for node in vol.members(pg) {
            let Some(Some(proc_)) = cluster.nodes.get(node.0 as usize - 1) else {
                continue;
            };
            let mut conn = hexad_client::blocking::Connection::connect(proc_.addr(0), IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect to node {node} at {}: {e}", proc_.addr(0)));
            let reply = conn
                .call(&Message::FetchRecords {
                    volume: VOLUME,
                    pg,
                    after_lsn: Lsn(0),
                    to_lsn: Lsn(u64::MAX),
                    max_bytes: 4 << 20,
                })
                .unwrap();
            let Message::Records { records, more, .. } = reply else {
                continue;
            };
            assert!(!more, "test volume fits one reply");
            let present: BTreeSet<Lsn> = records.iter().map(|r| r.lsn).collect();
            for (lsn, n) in &mut held {
                if present.contains(lsn) {
                    *n += 1;
                }
            }
        }
    }
    held
}

/// The writer's per-segment view: never ahead of what a node itself reports, and the 4th
/// highest SCL of each PG covers that PG's highest committed LSN.
fn check_writer_view(cluster: &Cluster, vol: &Volume, committed: &[Lsn]) {
    let committed: BTreeSet<Lsn> = committed.iter().copied().collect();
    for pg in [PgIndex(0), PgIndex(1)] {
        let view = vol.segment_scls(pg);
        for (node, scl) in &view {
            if cluster.nodes[node.0 as usize - 1].is_some() {
                assert!(
                    *scl <= node_scl(cluster, node.0, pg),
                    "writer thinks node {node} has more than it says"
                );
            }
        }
        let first = view[0].0 .0;
        let mut conn =
            hexad_client::blocking::Connection::connect(cluster.node(first).addr(0), IO_TIMEOUT)
                .unwrap();
        let Message::Records { records, .. } = conn
            .call(&Message::FetchRecords {
                volume: VOLUME,
                pg,
                after_lsn: Lsn(0),
                to_lsn: Lsn(u64::MAX),
                max_bytes: 4 << 20,
            })
            .unwrap()
        else {
            panic!("no records for {pg}")
        };
        let top = records
            .iter()
            .map(|r| r.lsn)
            .filter(|l| committed.contains(l))
            .max()
            .expect("commits in every PG");
        let mut scls: Vec<Lsn> = view.iter().map(|(_, s)| *s).collect();
        scls.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            scls[3] >= top,
            "PG {pg}: 4th highest SCL {} below committed LSN {top}: {view:?}",
            scls[3]
        );
    }
}

fn assert_on_quorum(cluster: &Cluster, vol: &Volume, lsns: &[Lsn], phase: &str) {
    let short: Vec<_> = copies(cluster, vol, lsns)
        .into_iter()
        .filter(|(_, n)| *n < 4)
        .collect();
    assert!(
        short.is_empty(),
        "{phase}: committed LSNs on fewer than 4 nodes: {short:?}"
    );
}

#[test]
fn commits_survive_an_az_loss_and_stop_cleanly_without_a_quorum() {
    let (cluster, map) = six_nodes("quorum");
    executor().run(async move {
        let mut cfg = VolumeConfig::new(VOLUME);
        // These tests count records on the nodes: keep them out of the page store.
        cfg.min_read_point = Some(Lsn::NONE);
        cfg.request_timeout = Duration::from_secs(1);
        cfg.quorum_timeout = Duration::from_secs(3);
        let vol = Rc::new(Volume::open(map, cfg).await.expect("open the volume"));

        // 1. All six up: concurrent writers commit; every commit is on >= 4 nodes.
        let (mut committed, worst) = commit_many(&vol, 8, 40).await.expect("all nodes up");
        println!("all up: {} commits, slowest {worst:?}", committed.len());
        check_writer_view(&cluster.borrow(), &vol, &committed);
        assert_on_quorum(&cluster.borrow(), &vol, &committed, "all up");

        // 2. Lose az1 (nodes 1 and 2) under load: commits go on, none stalls past the bound.
        let writers = {
            let vol = vol.clone();
            glommio::spawn_local(async move { commit_many(&vol, 8, 400).await })
        };
        glommio::timer::sleep(Duration::from_millis(50)).await;
        cluster.borrow_mut().kill(1);
        cluster.borrow_mut().kill(2);
        let (lsns, worst) = writers.await.expect("commits continue without one AZ");
        println!("az1 lost: {} commits, slowest {worst:?}", lsns.len());
        assert!(
            worst < STALL_BOUND,
            "a commit stalled {worst:?} (bound {STALL_BOUND:?})"
        );
        committed.extend(lsns);
        assert_on_quorum(&cluster.borrow(), &vol, &committed, "az1 lost");

        // 3. Lose a third node: no acknowledgement, then "quorum unavailable" naming nodes.
        cluster.borrow_mut().kill(3);
        let lsn = vol.append(&[change(999_999)]).await.unwrap();
        let started = Instant::now();
        match vol.wait_durable(lsn).await {
            Err(VolumeError::QuorumUnavailable { detail, .. }) => {
                println!("3 nodes down after {:?}: {detail}", started.elapsed());
                assert!(
                    detail.contains("NodeId(3)")
                        && detail.contains("NodeId(1)")
                        && detail.contains("NodeId(2)"),
                    "{detail}"
                );
            }
            other => panic!("expected QuorumUnavailable, got {other:?}"),
        }
        assert!(
            vol.vdl() < lsn,
            "a commit was acknowledged without a write quorum"
        );

        // 4. Node 3 returns: the pending commit and new ones become durable.
        cluster.borrow_mut().restart(3);
        vol.wait_durable(lsn)
            .await
            .expect("the pending commit completes once node 3 is back");
        let (lsns, _) = commit_many(&vol, 4, 20).await.expect("commits resume");
        committed.extend(lsns);
        committed.push(lsn);
        assert_on_quorum(&cluster.borrow(), &vol, &committed, "node 3 back");
        let held = copies(&cluster.borrow(), &vol, &committed);
        println!(
            "end: {} commits, every one on >= 4 of the running nodes: {}",
            committed.len(),
            held.values().all(|n| *n >= 4)
        );
    });
}

/// The SCL node `id` reports for `pg`.
fn node_scl(cluster: &Cluster, id: u32, pg: PgIndex) -> Lsn {
    let mut conn =
        hexad_client::blocking::Connection::connect(cluster.node(id).addr(0), IO_TIMEOUT).unwrap();
    match conn
        .call(&Message::GetSegmentState { volume: VOLUME, pg })
        .unwrap()
    {
        Message::SegmentState { scl, .. } => scl,
        _ => Lsn(0),
    }
}

#[test]
fn a_stopped_node_does_not_stop_commits_and_catches_up_after() {
    use nix::sys::signal::Signal;
    let (cluster, map) = six_nodes("sigstop");
    executor().run(async move {
        let mut cfg = VolumeConfig::new(VOLUME);
        // These tests count records on the nodes: keep them out of the page store.
        cfg.min_read_point = Some(Lsn::NONE);
        cfg.request_timeout = Duration::from_millis(500);
        cfg.quorum_timeout = Duration::from_secs(3);
        let vol = Rc::new(Volume::open(map, cfg).await.expect("open the volume"));
        let slow = vol.members(PgIndex(0))[2].0;
        commit_many(&vol, 4, 20).await.expect("warm up");

        cluster.borrow().signal(slow, Signal::SIGSTOP);
        let (lsns, worst) = commit_many(&vol, 8, 100).await.expect("commits continue with a node stopped");
        println!("node {slow} stopped: {} commits, slowest {worst:?}", lsns.len());
        assert!(worst < STALL_BOUND, "a commit stalled {worst:?} behind a stopped node");
        let last = *lsns.iter().max().unwrap();
        // Stay stopped past the request timeout, so the writer gives up on the connection.
        glommio::timer::sleep(Duration::from_millis(1500)).await;
        let timed_out = vol
            .peer_stats()
            .into_iter()
            .any(|p| p.node.0 == slow && p.last_error.as_deref().is_some_and(|e| e.contains("no ack") || e.contains("hello")));
        assert!(timed_out, "the writer did not notice the stopped node: {:?}", vol.peer_stats());

        cluster.borrow().signal(slow, Signal::SIGCONT);
        // It catches up from the writer's resend after its connection times out and returns.
        let deadline = Instant::now() + Duration::from_secs(15);
        let last_pg0 = lsns.iter().filter(|l| vol.vdl() >= **l).max().copied().unwrap_or(last);
        loop {
            let (scl0, scl1) = (node_scl(&cluster.borrow(), slow, PgIndex(0)), node_scl(&cluster.borrow(), slow, PgIndex(1)));
            let peers_scl0 = node_scl(&cluster.borrow(), vol.members(PgIndex(0))[4].0, PgIndex(0));
            let peers_scl1 = node_scl(&cluster.borrow(), vol.members(PgIndex(1))[4].0, PgIndex(1));
            let in_pg1 = vol.members(PgIndex(1)).iter().any(|n| n.0 == slow);
            if scl0 >= peers_scl0 && (!in_pg1 || scl1 >= peers_scl1) {
                println!("node {slow} caught up: SCL pg0 {scl0} (peers {peers_scl0}), pg1 {scl1} (peers {peers_scl1}); last commit {last_pg0}");
                break;
            }
            assert!(Instant::now() < deadline, "node {slow} did not catch up: SCL pg0 {scl0} vs {peers_scl0}, pg1 {scl1} vs {peers_scl1}");
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_full_resend_buffer_drains_by_age_while_a_node_is_stopped() {
    use nix::sys::signal::Signal;
    let (cluster, map) = six_nodes("budget");
    executor().run(async move {
        let mut cfg = VolumeConfig::new(VOLUME);
        // These tests count records on the nodes: keep them out of the page store.
        cfg.min_read_point = Some(Lsn::NONE);
        cfg.quorum_timeout = Duration::from_secs(3);
        // Records wait for all 6 or 200 ms past quorum; the budget holds ~1000 of them.
        cfg.quorum.retained_bytes_max = 256 << 10;
        cfg.quorum.retain_after_quorum = Duration::from_millis(200);
        let vol = Rc::new(Volume::open(map, cfg).await.expect("open the volume"));
        let stopped = vol.members(PgIndex(0))[0].0;
        cluster.borrow().signal(stopped, Signal::SIGSTOP);
        // 4000 records: the budget fills several times over and must drain by age alone.
        let result = commit_many(&vol, 8, 500).await;
        cluster.borrow().signal(stopped, Signal::SIGCONT);
        let (lsns, worst) = result.expect("a full resend buffer must drain by age, not stall");
        println!(
            "node {stopped} stopped, 256 KiB budget: {} commits, slowest {worst:?}",
            lsns.len()
        );
        assert!(worst < STALL_BOUND, "a commit stalled {worst:?}");
    });
}

#[test]
fn a_restarted_node_gets_what_it_missed_from_the_writers_resend() {
    let (cluster, map) = six_nodes("resend");
    executor().run(async move {
        let mut cfg = VolumeConfig::new(VOLUME);
        // These tests count records on the nodes: keep them out of the page store.
        cfg.min_read_point = Some(Lsn::NONE);
        cfg.request_timeout = Duration::from_millis(500);
        cfg.quorum_timeout = Duration::from_secs(3);
        // Keep records long enough to outlive the node's absence.
        cfg.quorum.retain_after_quorum = Duration::from_secs(30);
        let vol = Rc::new(Volume::open(map, cfg).await.expect("open the volume"));
        commit_many(&vol, 4, 20).await.expect("warm up");
        let gone = vol.members(PgIndex(0))[1].0;
        cluster.borrow_mut().kill(gone);
        // Commits it never sees: its log cannot have them, and there is no gossip yet (#6).
        let (lsns, _) = commit_many(&vol, 8, 50).await.expect("commits continue with one node down");
        let peer = vol.members(PgIndex(0)).into_iter().find(|n| n.0 != gone).unwrap().0;
        let target = node_scl(&cluster.borrow(), peer, PgIndex(0));
        assert!(target > Lsn(0) && lsns.len() == 400);
        cluster.borrow_mut().restart(gone);
        let after_restart = node_scl(&cluster.borrow(), gone, PgIndex(0));
        assert!(after_restart < target, "node {gone} already had the records it missed?");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let scl = node_scl(&cluster.borrow(), gone, PgIndex(0));
            if scl >= target {
                println!("node {gone}: SCL {after_restart} after restart -> {scl} by resend (peers {target})");
                break;
            }
            assert!(Instant::now() < deadline, "node {gone} stuck at SCL {scl}, peers at {target}");
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    });
}
