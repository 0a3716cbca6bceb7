//! A node on a disk that fills up, as an operator's would: a 48 MB ext4 image, loop-mounted
//! by this test (it needs root, `losetup`, `mkfs.ext4` and `mount`; without them it fails
//! and says so). The node's hot log is preallocated; a file then takes every free block.
//!
//! Two faults were found this way, and this test holds them fixed:
//! - a `Fence` whose `segments.meta` save failed with ENOSPC was refused yet half took
//!   effect (memory held the new epoch, the segment the old one);
//! - a node restarted on the full disk refused to start, misreading the preflight probe's
//!   ENOSPC as missing `O_DIRECT` support.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hexad_client::blocking::Connection;
use hexad_client::wire::{ErrorCode, FenceMode, Message};
use hexad_client::{Lsn, MembershipEpoch, PgIndex, VolumeEpoch, VolumeId};
use hexad_tests::{free_ports, fresh_dir, test_record, write_config, NodeOpts, NodeProcess};

const VOLUME: VolumeId = VolumeId(5);
const PG: PgIndex = PgIndex(0);
const IMAGE_BYTES: u64 = 48 << 20;

/// The mounted image; unmounted and removed when dropped.
struct SmallDisk {
    image: PathBuf,
    mount: PathBuf,
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("this test needs `{cmd}` (run as root with util-linux and e2fsprogs): {e}")
    });
    assert!(
        out.status.success(),
        "`{cmd} {args:?}` failed ({}): {} (this test needs root and a loop device)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SmallDisk {
    fn new(root: &Path) -> SmallDisk {
        let image = root.join("disk.img");
        let mount = root.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(IMAGE_BYTES))
            .unwrap();
        run(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), image.as_os_str()],
        );
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mount.as_os_str(),
            ],
        );
        SmallDisk { image, mount }
    }

    /// Takes every free block with one file.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.mount.join("filler")).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        let mut size = chunk.len();
        while size > 0 {
            match f.write(&chunk[..size]) {
                Ok(0) => size /= 2,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => size /= 2,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn append(lsn: u64, epoch: u64) -> Message {
    Message::AppendBatch {
        volume: VOLUME,
        pg: PG,
        volume_epoch: VolumeEpoch(epoch),
        membership_epoch: MembershipEpoch(1),
        records: vec![test_record(PG, lsn, lsn - 1, 200)],
    }
}

fn fence(c: &mut Connection, epoch: u64, mode: FenceMode) -> Message {
    c.call(&Message::Fence {
        volume: VOLUME,
        pg: PG,
        epoch: VolumeEpoch(epoch),
        mode,
    })
    .unwrap()
}

fn looked_epoch(c: &mut Connection) -> VolumeEpoch {
    match fence(c, 0, FenceMode::Look) {
        Message::FenceOk { view, .. } => view.volume_epoch,
        other => panic!("Fence Look answered {other:?}"),
    }
}

fn expect_ack(m: &Message, lsn: u64) {
    assert!(
        matches!(m, Message::AppendAck { durable_lsn, .. } if *durable_lsn == Lsn(lsn)),
        "append of LSN {lsn}: {m:?}"
    );
}

fn error_code(m: &Message) -> Option<ErrorCode> {
    match m {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn records_held(c: &mut Connection) -> Vec<Lsn> {
    match c
        .call(&Message::FetchRecords {
            volume: VOLUME,
            pg: PG,
            after_lsn: Lsn(0),
            to_lsn: Lsn(u64::MAX),
            max_bytes: 1 << 20,
        })
        .unwrap()
    {
        Message::Records { records, .. } => records.iter().map(|r| r.lsn).collect(),
        other => panic!("FetchRecords answered {other:?}"),
    }
}

#[test]
fn a_node_on_a_full_disk_refuses_cleanly_and_restarts() {
    let root = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "full-disk");
    let disk = SmallDisk::new(&root);
    let port = free_ports(1);
    let opts = NodeOpts {
        file_bytes: 4 << 20,
        file_count: 4,
        ..NodeOpts::default()
    };
    let config = write_config(&disk.mount, port, &opts);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"));
    let node = NodeProcess::start(&bin, &config, port);
    let mut c = node.connect(0);
    assert!(matches!(
        fence(&mut c, 1, FenceMode::Raise),
        Message::FenceOk { .. }
    ));
    expect_ack(&c.call(&append(1, 1)).unwrap(), 1);

    disk.fill();
    for mode in [FenceMode::Raise, FenceMode::Exclusive, FenceMode::Volume] {
        let refused = fence(&mut c, 5, mode);
        assert_eq!(
            error_code(&refused),
            Some(ErrorCode::Io),
            "{mode:?}: {refused:?}"
        );
        assert_eq!(
            looked_epoch(&mut c),
            VolumeEpoch(1),
            "{mode:?} left a trace"
        );
    }
    // Epoch 1 still rules everywhere: appends are taken (the hot log is preallocated), and a
    // truncation at epoch 1 fails only for want of space, never as stale.
    expect_ack(&c.call(&append(2, 1)).unwrap(), 2);
    let t = c
        .call(&Message::Truncate {
            volume: VOLUME,
            pg: PG,
            truncation: hexad_client::wire::Truncation {
                epoch: VolumeEpoch(1),
                start: Lsn(2),
                end: Lsn(100),
                sealed: false,
            },
        })
        .unwrap();
    assert_eq!(error_code(&t), Some(ErrorCode::Io), "{t:?}");

    node.kill9();
    let node = NodeProcess::start(&bin, &config, port);
    assert!(
        node.startup
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("is full")),
        "the restart says the disk is full: {:?}",
        node.startup
    );
    let mut c = node.connect(0);
    assert_eq!(looked_epoch(&mut c), VolumeEpoch(1));
    assert_eq!(records_held(&mut c), vec![Lsn(1), Lsn(2)]);
    expect_ack(&c.call(&append(3, 1)).unwrap(), 3);
    drop(node);
    drop(disk);
}
