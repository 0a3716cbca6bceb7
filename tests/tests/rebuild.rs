//! Segment rebuild on a real 6-node cluster (issue #6): node 6's data directory is wiped
//! while it is down and the writer commits more; its peers have coalesced and moved their
//! floors, so the records it lacks are no longer in any hot log. Restarted, node 6 finds
//! the segments it should hold (`SegmentStats` from its peers), copies each one's page
//! baseline from a peer, pulls the records above it, and then serves every page
//! byte-identical to node 1.
//!
//! Fault injection: once node 6 is down, each peer is armed (`HEXAD_FAULT_CORRUPT_REPAIR`)
//! to send its first repair reply (a baseline chunk or pulled records) with one byte flipped
//! after its CRC was computed. Node 6 must reject it (`repair_chunks_rejected` counts
//! it), ask again, and store nothing corrupt: the byte-for-byte comparison covers every
//! page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Volume, VolumeConfig};
use hexad_client::wire::{Message, RebuildPhase, SegmentStat};
use hexad_client::{Lsn, PageNo, PgIndex, VolumeId};
use hexad_tests::{counter_changes, fresh_dir, get_page, Cluster, NodeOpts};

const VOLUME: VolumeId = VolumeId(93);
const PGS: [PgIndex; 2] = [PgIndex(0), PgIndex(1)];
/// Pages written per PG.
const PAGES: u64 = 300;
/// Mini-transactions before node 6 goes down, and while it is down.
const BEFORE: u64 = 3_000;
const WHILE_DOWN: u64 = 3_000;
const BOUND: Duration = Duration::from_secs(45);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

fn stats(cluster: &Cluster, id: u32) -> BTreeMap<PgIndex, SegmentStat> {
    match cluster
        .node(id)
        .connect(0)
        .call(&Message::GetSegmentStats)
        .unwrap()
    {
        Message::SegmentStats { segments } => segments
            .into_iter()
            .filter(|s| s.volume == VOLUME)
            .map(|s| (s.pg, s))
            .collect(),
        other => panic!("node {id}: {other:?}"),
    }
}

/// Commits `count` mini-transactions from `first` on: each writes 16 bytes at a page's
/// offset 8 and adds to the counter at offset 0, in PG 0 and PG 1 by turns.
/// With `min_read_point`, nodes keep every record above it in their logs.
fn write(cluster: &Cluster, first: u64, count: u64, min_read_point: Option<Lsn>) -> Lsn {
    let map = cluster.map();
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let mut cfg = VolumeConfig::new(VOLUME);
            cfg.min_read_point = min_read_point;
            let vol = Volume::open(map, cfg).await.expect("open");
            let mut last = Lsn::NONE;
            for seq in first..first + count {
                let pg = PGS[(seq % 2) as usize];
                let page = PageNo(pg.first_page().0 + (seq / 2) % PAGES);
                last = vol
                    .append(&counter_changes(page, seq))
                    .await
                    .expect("append");
                if seq % 64 == 63 {
                    vol.wait_durable(last).await.expect("durable");
                }
            }
            vol.wait_durable(last).await.expect("durable");
            // Let Progress carry the final VDL as the min read point, so peers coalesce
            // everything and move their floors.
            glommio::timer::sleep(Duration::from_millis(300)).await;
            vol.vdl()
        })
}

/// Waits until every peer has moved PG `pg`'s floor to `at_least`.
fn wait_for_floors(cluster: &Cluster, ids: &[u32], at_least: Lsn) {
    let started = Instant::now();
    for id in ids {
        for pg in PGS {
            loop {
                let floor = stats(cluster, *id).get(&pg).map_or(Lsn::NONE, |s| s.floor);
                if floor >= at_least {
                    break;
                }
                assert!(
                    started.elapsed() < BOUND,
                    "node {id} pg {pg}: floor {floor} after {BOUND:?}, expected {at_least}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_wiped_node_rebuilds_its_segments_from_peers_and_reads_the_same() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "rebuild");
    let opts = NodeOpts {
        file_bytes: 2 << 20,
        file_count: 6,
        env: vec![(
            "HEXAD_FAULT_CORRUPT_REPAIR".into(),
            dir.join("fault-{id}").display().to_string(),
        )],
        ..NodeOpts::default()
    };
    let mut cluster = Cluster::start(&bin(), &dir, 3, 2, &opts);
    let first_vdl = write(&cluster, 0, BEFORE, None);
    // Each PG's last record at or below the first VDL (the PGs take turns, 2 records each).
    let first_floor = Lsn(first_vdl.0 - 2);
    wait_for_floors(&cluster, &[1, 2, 3, 4, 5, 6], first_floor);
    cluster.kill(6);
    std::fs::remove_dir_all(cluster.data_dir(6)).expect("wipe node 6's data directory");
    // The second writer keeps the min read point at the first VDL: the peers' floors stay
    // there, so node 6 needs a baseline for what is below and pulls what is above.
    let vdl = write(&cluster, BEFORE, WHILE_DOWN, Some(first_vdl));
    wait_for_floors(&cluster, &[1, 2, 3, 4, 5], first_floor);
    for id in 1..=5 {
        std::fs::write(dir.join(format!("fault-{id}")), "1").unwrap();
    }
    cluster.restart(6);
    let started = Instant::now();
    let tails: BTreeMap<PgIndex, Lsn> = stats(&cluster, 1)
        .into_iter()
        .map(|(pg, s)| (pg, s.scl))
        .collect();
    assert_eq!(tails.len(), 2, "node 1 holds both PGs: {tails:?}");
    loop {
        let six = stats(&cluster, 6);
        let done = PGS.iter().all(|pg| {
            six.get(pg)
                .is_some_and(|s| s.scl >= tails[pg] && s.rebuild == RebuildPhase::None)
        });
        if done {
            eprintln!("node 6 rebuilt in {:?}: {six:?}", started.elapsed());
            for pg in PGS {
                assert!(
                    six[&pg].rebuild_pages > 0 && six[&pg].floor >= first_floor,
                    "pg {pg} was rebuilt from a baseline"
                );
                assert!(
                    six[&pg].gossip_records > 0,
                    "pg {pg}: the records above the baseline were pulled"
                );
            }
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "node 6 not rebuilt after {BOUND:?}: {six:?}; peers at {tails:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let node6 = cluster.stats(6);
    eprintln!(
        "node 6: {} page versions ({} bytes) copied, {} records pulled, {} repair replies rejected",
        node6.rebuild_pages_copied,
        node6.rebuild_bytes_copied,
        node6.gossip_records_pulled,
        node6.repair_chunks_rejected
    );
    assert!(
        node6.repair_chunks_rejected >= 1,
        "the peers' corrupted replies were detected"
    );
    let mut compared = 0;
    for pg in PGS {
        for i in 0..PAGES {
            let p = PageNo(pg.first_page().0 + i);
            let theirs = get_page(cluster.node(1), VOLUME, p, vdl, tails[&pg]);
            let mine = get_page(cluster.node(6), VOLUME, p, vdl, tails[&pg]);
            match (&mine, &theirs) {
                (Message::Page { data: a, .. }, Message::Page { data: b, .. }) => {
                    let differ = a.iter().zip(b.iter()).position(|(x, y)| x != y);
                    assert!(
                        differ.is_none() && a.len() == b.len(),
                        "page {p}: node 6 differs from node 1 at byte {differ:?}"
                    );
                    compared += 1;
                }
                _ => panic!("page {p}: node 6 {mine:?}, node 1 {theirs:?}"),
            }
        }
    }
    eprintln!("{compared} pages byte-identical on node 6 and node 1");
}
