//! Read-only attachments on a real 6-node cluster: 15 readers attach besides the writer and
//! read; a 16th is refused with `TooManyReaders`, also with a node down; once one reader
//! detaches, the 16th attaches. With 4 of PG 0's nodes down the count cannot be checked,
//! and a reader still attaches (unregistered) and reads, since reads need only 3.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::volume::{Change, Volume, VolumeConfig, VolumeError};
use hexad_client::wire::Op;
use hexad_client::{PageNo, VolumeId, MAX_READERS};
use hexad_tests::{fresh_dir, Cluster, NodeOpts};

const VOLUME: VolumeId = VolumeId(71);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

#[test]
fn fifteen_readers_attach_and_a_sixteenth_waits_for_a_free_slot() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "readers");
    let opts = NodeOpts {
        file_bytes: 2 << 20,
        file_count: 4,
        ..NodeOpts::default()
    };
    let cluster = Rc::new(RefCell::new(Cluster::start(&bin(), &dir, 3, 2, &opts)));
    let map = cluster.borrow().map();
    let page = PageNo(3);
    let mut cfg = VolumeConfig::new(VOLUME);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.open_timeout = Duration::from_secs(20);
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let attach = || Volume::attach_reader(map.clone(), cfg.clone());
            let vol = Volume::open(map.clone(), cfg.clone()).await.expect("open");
            let commit = vol
                .append(&[Change {
                    page,
                    op: Op::WriteBytes,
                    payload: Bytes::from([&8u32.to_le_bytes()[..], b"readers!"].concat()),
                }])
                .await
                .unwrap();
            vol.wait_durable(commit).await.unwrap();
            let mut readers = Vec::new();
            for i in 0..MAX_READERS {
                let r = attach()
                    .await
                    .unwrap_or_else(|e| panic!("reader {i} could not attach: {e}"));
                assert!(r.slot().0.is_some(), "reader {i} holds a slot");
                r.refresh().await.expect("refresh");
                let got = r.read_page(page, None).await.expect("read");
                assert_eq!(&got.data[8..16], b"readers!");
                readers.push(r);
            }
            let mut slots: Vec<u32> = readers.iter().map(|r| r.slot().0.unwrap()).collect();
            slots.sort_unstable();
            slots.dedup();
            assert_eq!(slots.len(), MAX_READERS, "every reader has its own slot");
            match attach().await {
                Err(VolumeError::TooManyReaders(why)) => eprintln!("16th reader refused: {why}"),
                Ok(r) => panic!("a 16th reader attached with slot {:?}", r.slot()),
                Err(e) => panic!("expected TooManyReaders, got {e}"),
            }
            // One node down: 5 still answer, and each slot is still held on 3 of them,
            // which leaves no 4 for a 16th reader.
            cluster.borrow_mut().kill(2);
            match attach().await {
                Err(VolumeError::TooManyReaders(_)) => {}
                Ok(r) => panic!("with a node down a 16th reader attached: {:?}", r.slot()),
                Err(e) => panic!("expected TooManyReaders, got {e}"),
            }
            readers.pop().unwrap().detach().await;
            let r = attach().await.expect("a freed slot is taken");
            assert!(r.slot().0.is_some());
            // An AZ and one more node down: only 3 answer, nobody can count, and a reader
            // attaches unregistered and reads (reads need 3).
            cluster.borrow_mut().kill(3);
            cluster.borrow_mut().kill(5);
            let r = attach().await.expect("a reader attaches with 3 of 6 up");
            assert_eq!(r.slot().0, None, "unregistered: only 3 could answer");
            let got = r.read_page(page, None).await.expect("read");
            assert_eq!(&got.data[8..16], b"readers!");
        });
}
