//! An open-loop writer into one PG (a commit every 5 ms, each waited for by its own task,
//! so records keep arriving while connections are set up) while a member is killed and
//! restarted. Every (re)connect resends the records the node lacks; merged carelessly with
//! the records queued meanwhile, they put a batch back in LSN, the node refuses it and
//! closes the connection, and under continuous load VDL did not move until the load
//! stopped. Here the VDL must keep up while the load runs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::Op;
use hexad_client::{Lsn, PageNo, VolumeId};
use hexad_tests::{fresh_dir, Cluster, NodeOpts};

const EVERY: Duration = Duration::from_millis(5);
const COMMITS: u64 = 800;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

#[test]
fn an_open_loop_into_one_pg_commits_while_a_member_leaves_and_returns() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "open-loop");
    let cluster = Rc::new(RefCell::new(Cluster::start(
        &bin(),
        &dir,
        3,
        2,
        &NodeOpts::default(),
    )));
    let map = cluster.borrow().map();
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let vol = Rc::new(
                Volume::open(map, VolumeConfig::new(VolumeId(5)))
                    .await
                    .unwrap(),
            );
            let start = Instant::now();
            let mut tasks = Vec::new();
            // (LSN issued, VDL then) once a second.
            let mut checkpoints: Vec<(Lsn, Lsn)> = Vec::new();
            let mut last_issued = Lsn::NONE;
            for i in 0..COMMITS {
                let at = start + EVERY * u32::try_from(i).unwrap();
                glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                match i {
                    200 => cluster.borrow_mut().kill(6),
                    400 => cluster.borrow_mut().restart(6),
                    _ => {}
                }
                if i % 200 == 199 {
                    checkpoints.push((last_issued, vol.vdl()));
                }
                let mut payload = 0u32.to_le_bytes().to_vec();
                payload.extend(i.to_le_bytes());
                let change = Change {
                    page: PageNo(i % 100),
                    op: Op::WriteBytes,
                    payload: Bytes::from(payload),
                };
                let lsn = vol.append(&[change]).await.expect("append");
                last_issued = lsn;
                let v = vol.clone();
                tasks.push(glommio::spawn_local(
                    async move { v.wait_durable(lsn).await },
                ));
            }
            for t in tasks {
                t.await.expect("every commit is acknowledged");
            }
            eprintln!("(issued, VDL) each second: {checkpoints:?}");
            // Each second, VDL has passed what was issued a second before.
            for pair in checkpoints.windows(2) {
                assert!(
                    pair[1].1 >= pair[0].0,
                    "VDL stalled under load: {checkpoints:?}"
                );
            }
        });
}
