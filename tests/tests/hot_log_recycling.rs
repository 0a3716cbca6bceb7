//! Hot-log recycling on 6 real nodes: a writer commits several times more redo than a
//! node's hot log holds. Every commit must succeed (the coalescer stores the pages, the
//! shard releases log files, and appends slow down rather than fail while it catches up);
//! pages read back exactly, the `AddU64` counter holds exactly its sum, and a node killed
//! with SIGKILL and restarted rebuilds its SCL from its persisted floor plus what is left
//! of its log, and serves the same bytes. A new writer then opens the volume: recovery
//! starts at the floors and finds every commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::{Message, Op};
use hexad_client::{Lsn, PageNo, PgIndex, VolumeId};
use hexad_tests::{fresh_dir, Cluster, NodeOpts};

const VOLUME: VolumeId = VolumeId(31);
const PAGES: u64 = 200;
const COUNTER: PageNo = PageNo(PAGES + 10);
/// Payload of each write: 4 KiB at offset 0 (plus the 4-byte offset).
const WRITE_BYTES: usize = 4096;
/// Hot log per node: 4 files of 2 MiB.
const FILE_BYTES: u64 = 2 << 20;
const FILES: u32 = 4;
/// Commits: about 40 MiB of redo, five times the hot log.
const COMMITS: u64 = 10_000;
const IN_FLIGHT: u64 = 32;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

/// The bytes commit `i` writes to its page.
fn payload(i: u64) -> Vec<u8> {
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend((0..WRITE_BYTES).map(|b| (i as usize * 31 + b) as u8));
    p
}

#[test]
fn the_hot_log_stays_bounded_under_sustained_writes() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "recycling");
    let opts = NodeOpts {
        file_bytes: FILE_BYTES,
        file_count: FILES,
        ..NodeOpts::default()
    };
    let cluster = Rc::new(RefCell::new(Cluster::start(&bin(), &dir, 3, 2, &opts)));
    let map = cluster.borrow().map();
    let map2 = map.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let mut cfg = VolumeConfig::new(VOLUME);
            cfg.request_timeout = Duration::from_secs(5);
            let vol = Rc::new(Volume::open(map, cfg).await.expect("open"));
            // Each task commits every IN_FLIGHT-th change: page i % PAGES gets payload(i),
            // and every tenth commit adds i to the counter.
            let mut tasks = Vec::new();
            for t in 0..IN_FLIGHT {
                let vol = vol.clone();
                tasks.push(glommio::spawn_local(async move {
                    let mut last = BTreeMap::new();
                    let mut sum = 0u64;
                    let mut i = t;
                    while i < COMMITS {
                        let mut changes = vec![Change {
                            page: PageNo(i % PAGES),
                            op: Op::WriteBytes,
                            payload: Bytes::from(payload(i)),
                        }];
                        if i % 10 == 0 {
                            let mut p = 64u32.to_le_bytes().to_vec();
                            p.extend(i.to_le_bytes());
                            changes.push(Change {
                                page: COUNTER,
                                op: Op::AddU64,
                                payload: Bytes::from(p),
                            });
                            sum += i;
                        }
                        let lsn = vol.append(&changes).await.expect("append");
                        vol.wait_durable(lsn).await.expect("commit");
                        last.insert(i % PAGES, (lsn, i));
                        i += IN_FLIGHT;
                    }
                    (last, sum)
                }));
            }
            // The last commit to each page, by LSN, over all tasks.
            let mut last: BTreeMap<u64, (Lsn, u64)> = BTreeMap::new();
            let mut sum = 0u64;
            for t in tasks {
                let (l, s) = t.await;
                sum += s;
                for (page, (lsn, i)) in l {
                    let e = last.entry(page).or_insert((lsn, i));
                    if lsn > e.0 {
                        *e = (lsn, i);
                    }
                }
            }
            let capacity = FILE_BYTES * u64::from(FILES);
            let mut recycling = 0u32;
            for id in 1..=6 {
                let s = cluster.borrow().stats(id);
                eprintln!(
                    "node {id}: {} MB of log written into {} MB; {} page versions, {} records coalesced, {} back-pressure waits, {}/{} files free, {} MB rebuilt",
                    s.log_bytes_written >> 20,
                    capacity >> 20,
                    s.page_versions_written,
                    s.records_coalesced,
                    s.backpressure_waits,
                    s.hot_log_files_free,
                    s.hot_log_files,
                    s.rebuild_bytes_copied >> 20
                );
                // A node that falls behind on a slow machine (its log full of records
                // above a gap it cannot fill) catches up by copying a page baseline
                // instead (DESIGN §8): the writer needs only 4 of 6, so it never waits.
                let recycled = s.log_bytes_written > 3 * capacity;
                assert!(
                    recycled || s.rebuild_bytes_copied > 0,
                    "node {id} wrote {} bytes of log, not several times its {capacity}, and did not rebuild",
                    s.log_bytes_written
                );
                recycling += u32::from(recycled);
                assert!(s.page_versions_written > 0);
            }
            assert!(
                recycling >= 4,
                "only {recycling} nodes recycled their hot log several times over"
            );
            let check = |page: u64, data: &[u8]| {
                let (_, i) = last[&page];
                assert!(
                    data[..WRITE_BYTES] == payload(i)[4..],
                    "page {page}: not the bytes of its last commit {i}"
                );
            };
            for page in 0..PAGES {
                let got = vol.read_page(PageNo(page), None).await.expect("read");
                check(page, &got.data);
            }
            let counter = |data: &[u8]| u64::from_le_bytes(data[64..72].try_into().unwrap());
            let got = vol.read_page(COUNTER, None).await.expect("counter");
            assert_eq!(counter(&got.data), sum, "the AddU64 counter");

            // SIGKILL node 2 and restart it: it starts from its floor and what is left of
            // its log, and answers complete at VDL with the same bytes.
            let vdl = vol.vdl();
            cluster.borrow_mut().kill(2);
            cluster.borrow_mut().restart(2);
            let ask = |page: PageNo| {
                cluster.borrow().node(2).connect(0).call(&Message::GetPage {
                    volume: VOLUME,
                    pg: PgIndex(0),
                    page,
                    read_lsn: vdl,
                    complete_lsn: vdl,
                    page_head: Lsn::NONE,
                })
            };
            for page in (0..PAGES).chain([COUNTER.0]) {
                match ask(PageNo(page)).unwrap() {
                    Message::Page { data, .. } if page == COUNTER.0 => {
                        assert_eq!(counter(&data), sum, "node 2's counter after restart");
                    }
                    Message::Page { data, .. } => check(page, &data),
                    other => panic!("node 2 after restart, page {page}: {other:?}"),
                }
            }
            // A new writer opens the volume: recovery starts at the nodes' floors (their
            // logs no longer hold the early records) and finds every commit.
            drop(vol);
            let mut cfg = VolumeConfig::new(VOLUME);
            cfg.request_timeout = Duration::from_secs(5);
            let vol = Volume::open(map2, cfg).await.expect("reopen");
            assert!(vol.vdl() >= vdl, "reopened at {} below {vdl}", vol.vdl());
            for page in 0..PAGES {
                let got = vol.read_page(PageNo(page), None).await.expect("read");
                check(page, &got.data);
            }
            let got = vol.read_page(COUNTER, None).await.expect("counter");
            assert_eq!(counter(&got.data), sum, "the counter after reopening");
        });
}
