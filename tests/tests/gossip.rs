//! Gossip on a real 6-node cluster: after 200 commits node 6 is killed while the writer
//! commits 10,500 more; the writer then goes away (its executor ends, so nothing is resent)
//! and node 6 restarts. It must reach the same SCL as its peers through gossip alone and
//! hold the same record bytes. Before it restarts, each peer is armed
//! (`HEXAD_FAULT_CORRUPT_REPAIR`) to send its first reply of pulled records with one byte
//! flipped after the records' CRCs were computed: node 6 must reject it and ask again.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::{ErrorCode, Message, Op, Record};
use hexad_client::{Lsn, PageNo, PgIndex, VolumeId};
use hexad_tests::{fresh_dir, Cluster, NodeOpts};

const VOLUME: VolumeId = VolumeId(81);
const PG: PgIndex = PgIndex(0);
/// Commits while node 6 runs, then while it is stopped.
const FIRST: u64 = 200;
const COMMITS: u64 = 10_500;
const CATCH_UP: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

fn scl(cluster: &Cluster, id: u32) -> Lsn {
    match cluster
        .node(id)
        .connect(0)
        .call(&Message::GetSegmentState {
            volume: VOLUME,
            pg: PG,
        })
        .unwrap()
    {
        Message::SegmentState { scl, .. } => scl,
        Message::Error {
            code: ErrorCode::NoSuchSegment,
            ..
        } => Lsn::NONE,
        other => panic!("node {id}: {other:?}"),
    }
}

/// Every record of the PG node `id` holds up to `to`.
fn records(cluster: &Cluster, id: u32, to: Lsn) -> Vec<Record> {
    let mut conn = cluster.node(id).connect(0);
    let mut out: Vec<Record> = Vec::new();
    loop {
        let after = out.last().map_or(Lsn::NONE, |r| r.lsn);
        match conn
            .call(&Message::FetchRecords {
                volume: VOLUME,
                pg: PG,
                after_lsn: after,
                to_lsn: to,
                max_bytes: 4 << 20,
            })
            .unwrap()
        {
            Message::Records { records, more, .. } => {
                out.extend(records);
                if !more {
                    return out;
                }
            }
            other => panic!("node {id}: {other:?}"),
        }
    }
}

#[test]
fn a_stopped_node_catches_up_through_gossip_alone() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "gossip");
    let opts = NodeOpts {
        file_bytes: 8 << 20,
        file_count: 8,
        env: vec![(
            "HEXAD_FAULT_CORRUPT_REPAIR".into(),
            dir.join("fault-{id}").display().to_string(),
        )],
        ..NodeOpts::default()
    };
    let cluster = RefCell::new(Cluster::start(&bin(), &dir, 3, 2, &opts));
    let map = cluster.borrow().map();
    // Killed rather than stopped: a stopped node's socket would still take in every batch.
    let stop = || cluster.borrow_mut().kill(6);
    let vdl = LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let mut cfg = VolumeConfig::new(VOLUME);
            // Records stay in the logs, so they can be compared byte for byte.
            cfg.min_read_point = Some(Lsn::NONE);
            let vol = Volume::open(map, cfg).await.expect("open");
            let mut last = Lsn::NONE;
            for seq in 0..COMMITS + FIRST {
                if seq == FIRST {
                    // Every node holds the segment now; node 6 misses what follows.
                    stop();
                }
                let page = PageNo(PG.first_page().0 + seq % 100);
                let mut payload = 8u32.to_le_bytes().to_vec();
                payload.extend(seq.to_le_bytes());
                last = vol
                    .append(&[Change {
                        page,
                        op: Op::WriteBytes,
                        payload: Bytes::from(payload),
                    }])
                    .await
                    .expect("append");
                if seq % 64 == 63 {
                    vol.wait_durable(last)
                        .await
                        .expect("durable with node 6 stopped");
                }
            }
            vol.wait_durable(last).await.expect("durable");
            vol.vdl()
            // The executor ends here: the writer and its connections are gone, so node 6
            // gets nothing more from it.
        });
    for id in 1..=5 {
        std::fs::write(dir.join(format!("fault-{id}")), "1").unwrap();
    }
    cluster.borrow_mut().restart(6);
    let cluster = cluster.into_inner();
    let started = Instant::now();
    let peers_best = loop {
        let best = (1..=5).map(|id| scl(&cluster, id)).max().unwrap();
        let six = scl(&cluster, 6);
        if six >= vdl && six == best {
            break best;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "node 6 at SCL {six} after {CATCH_UP:?}; peers at {best}, VDL {vdl}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let pulled = cluster.stats(6);
    eprintln!(
        "node 6 caught up to SCL {peers_best} in {:?}: gossip pulled {} records ({} bytes)",
        started.elapsed(),
        pulled.gossip_records_pulled,
        pulled.gossip_bytes_pulled
    );
    assert!(
        pulled.gossip_records_pulled > 0,
        "node 6 got everything without gossip: the test did not stop it in time"
    );
    assert!(
        pulled.repair_chunks_rejected >= 1,
        "node 6 detected the corrupted reply of pulled records"
    );
    let (mine, theirs) = (
        records(&cluster, 6, peers_best),
        records(&cluster, 1, peers_best),
    );
    assert_eq!(mine.len(), theirs.len());
    assert!(
        mine.iter().zip(&theirs).all(|(a, b)| a.raw() == b.raw()),
        "node 6 holds the same record bytes as node 1"
    );
    assert!(mine.len() as u64 >= COMMITS);
}
