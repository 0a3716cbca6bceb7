//! A later open fences an older writer on every PG of the volume, also on PGs the open
//! never saw: writer A opens an empty volume, writer B opens it after A, and A's first
//! records go to a PG that no node held when B listed the volume. Fenced per PG only, A
//! would commit them on 6 of 6 nodes and B, which saw no such PG, would recover VDL 0 and
//! reuse their LSNs. The volume-wide fence (`Fence` mode `Volume`) makes every node refuse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Change, Volume, VolumeConfig, VolumeError};
use hexad_client::wire::Op;
use hexad_client::{PageNo, VolumeId};
use hexad_tests::{fresh_dir, Cluster, NodeOpts};

const VOLUME: VolumeId = VolumeId(81);
/// A page of PG 3 (1,310,720 pages a PG).
const FRESH_PG_PAGE: PageNo = PageNo(3 * 1_310_720 + 17);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

fn change(page: PageNo, text: &[u8]) -> Change {
    Change {
        page,
        op: Op::WriteBytes,
        payload: Bytes::from([&0u32.to_le_bytes()[..], text].concat()),
    }
}

#[test]
fn a_later_open_fences_the_older_writer_on_a_pg_it_never_saw() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "fencing");
    let opts = NodeOpts {
        file_bytes: 2 << 20,
        file_count: 4,
        ..NodeOpts::default()
    };
    let cluster = Cluster::start(&bin(), &dir, 3, 2, &opts);
    let map = cluster.map();
    let mut cfg = VolumeConfig::new(VOLUME);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.open_timeout = Duration::from_secs(20);
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let a = Volume::open(map.clone(), cfg.clone())
                .await
                .expect("A opens");
            let b = Volume::open(map.clone(), cfg.clone())
                .await
                .expect("B opens");
            assert!(b.recovery().epoch > a.recovery().epoch, "B opened after A");
            let outcome = glommio::timer::timeout(Duration::from_secs(20), async {
                let written = match a.append(&[change(FRESH_PG_PAGE, b"from A")]).await {
                    Ok(lsn) => a.wait_durable(lsn).await.map(|()| lsn),
                    Err(e) => Err(e),
                };
                Ok(written)
            })
            .await
            .expect("A's append ends within 20 s");
            match outcome {
                Ok(lsn) => panic!("the fenced writer A committed LSN {lsn} on a fresh PG"),
                Err(VolumeError::Fenced(why)) => eprintln!("A is fenced: {why}"),
                Err(e) => panic!("A failed, but not as fenced: {e}"),
            }
            // B writes the same PG and reads its own record back.
            let lsn = b
                .append(&[change(FRESH_PG_PAGE, b"from B")])
                .await
                .expect("B appends");
            b.wait_durable(lsn).await.expect("B commits");
            let page = b.read_page(FRESH_PG_PAGE, None).await.expect("B reads");
            assert_eq!(&page.data[0..6], b"from B");
        });
    drop(cluster);
}

/// A volume opened while one node is down commits with the other five.
#[test]
fn a_volume_opened_with_a_node_down_commits_with_the_other_five() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "open-node-down");
    let mut cluster = Cluster::start(&bin(), &dir, 3, 2, &NodeOpts::default());
    cluster.kill(6);
    let map = cluster.map();
    let mut cfg = VolumeConfig::new(VolumeId(82));
    cfg.request_timeout = Duration::from_secs(2);
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let vol = Volume::open(map, cfg).await.expect("open with 5 of 6");
            let started = std::time::Instant::now();
            let lsn = vol
                .append(&[change(FRESH_PG_PAGE, b"five")])
                .await
                .expect("append");
            glommio::timer::timeout(Duration::from_secs(10), async {
                Ok(vol.wait_durable(lsn).await)
            })
            .await
            .expect("committed within 10 s with node 6 down")
            .expect("committed");
            eprintln!("committed with node 6 down in {:?}", started.elapsed());
        });
    drop(cluster);
}
