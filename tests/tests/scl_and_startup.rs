//! SCL on a real node (a gap holds it back, filling the gap advances it, both survive a
//! restart), and the startup errors a user can act on: one line, non-zero exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hexad_client::wire::Message;
use hexad_client::{Lsn, MembershipEpoch, PgIndex, VolumeEpoch, VolumeId};
use hexad_tests::{
    free_ports, fresh_dir, run_to_exit, test_record, write_config, NodeOpts, NodeProcess,
};

const PG: PgIndex = PgIndex(0);
const VOLUME: VolumeId = VolumeId(42);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

fn small() -> NodeOpts {
    NodeOpts {
        file_bytes: 2 << 20,
        file_count: 2,
        ..NodeOpts::default()
    }
}

/// Appends records `lsns` (chain `l-1 -> l`) and returns the ack's SCL.
fn append(node: &NodeProcess, lsns: &[u64]) -> Lsn {
    let records = lsns
        .iter()
        .map(|&l| test_record(PG, l, l - 1, 64))
        .collect();
    let msg = Message::AppendBatch {
        volume: VOLUME,
        pg: PG,
        volume_epoch: VolumeEpoch(1),
        membership_epoch: MembershipEpoch(1),
        records,
    };
    match node.connect(0).call(&msg).unwrap() {
        Message::AppendAck { scl, .. } => scl,
        other => panic!("{other:?}"),
    }
}

fn state(node: &NodeProcess) -> (Lsn, Lsn) {
    match node
        .connect(0)
        .call(&Message::GetSegmentState {
            volume: VOLUME,
            pg: PG,
        })
        .unwrap()
    {
        Message::SegmentState {
            scl, highest_lsn, ..
        } => (scl, highest_lsn),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scl_stops_below_a_gap_and_advances_when_it_is_filled() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "scl");
    let port = free_ports(1);
    let config = write_config(&dir, port, &small());
    let node = NodeProcess::start(&bin(), &config, port);
    assert_eq!(append(&node, &[1, 2]), Lsn(2));
    assert_eq!(
        append(&node, &[4, 5]),
        Lsn(2),
        "LSN 3 is missing: SCL must stay at 2"
    );
    assert_eq!(state(&node), (Lsn(2), Lsn(5)));
    node.kill9();
    let node = NodeProcess::start(&bin(), &config, port);
    assert_eq!(
        state(&node),
        (Lsn(2), Lsn(5)),
        "restart recomputes SCL from the log, gap included"
    );
    assert_eq!(
        append(&node, &[3]),
        Lsn(5),
        "filling the gap advances SCL past the records above it"
    );
    node.kill9();
    let node = NodeProcess::start(&bin(), &config, port);
    assert_eq!(state(&node), (Lsn(5), Lsn(5)));
}

/// Runs the node and expects a one-line error containing `needle`.
fn expect_startup_error(args: &[&str], needle: &str) {
    let (code, stderr) = run_to_exit(&bin(), args, EXIT_TIMEOUT);
    assert!(
        matches!(code, Some(c) if c != 0),
        "expected failure, got {code:?}: {stderr}"
    );
    // Exactly one error line, and it is the last; lines before it are progress notices.
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("hexad-node: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the error is not the last line: {stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "expected {needle:?} in: {}",
        errors[0]
    );
}

#[test]
fn missing_data_dir() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "nodir");
    let config = write_config(&dir, free_ports(1), &small());
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    expect_startup_error(&["--config", config.to_str().unwrap()], "data directory");
}

#[test]
fn unwritable_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "rodir");
    let config = write_config(&dir, free_ports(1), &small());
    // Root ignores permission bits; a read-only bind or a file in place of the dir does not.
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data"), b"not a directory").unwrap();
    std::fs::set_permissions(dir.join("data"), std::fs::Permissions::from_mode(0o444)).unwrap();
    expect_startup_error(&["--config", config.to_str().unwrap()], "not a directory");
}

#[test]
fn tmpfs_is_refused() {
    let shm = Path::new("/dev/shm");
    let is_tmpfs = std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" /dev/shm tmpfs ")));
    assert!(
        is_tmpfs,
        "this test needs /dev/shm to be a tmpfs (it is on Linux by default)"
    );
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "tmpfs");
    let data = shm.join(format!("hexad-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("node_id = 1\naz = \"a\"\ndata_dir = \"{}\"\nbase_port = {}\nshards = 1\npin_shards = false\n", data.display(), free_ports(1))).unwrap();
    expect_startup_error(&["--config", config.to_str().unwrap()], "memory filesystem");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn port_already_in_use() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "port");
    let port = free_ports(1);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let config = write_config(&dir, port, &small());
    expect_startup_error(&["--config", config.to_str().unwrap()], "already in use");
}

#[test]
fn second_node_on_the_same_port_is_refused() {
    // glommio binds with SO_REUSEPORT, so without the node's own check both would "listen".
    let port = free_ports(1);
    let a = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "dup-a");
    let b = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "dup-b");
    let _first = NodeProcess::start(&bin(), &write_config(&a, port, &small()), port);
    let config = write_config(&b, port, &small());
    expect_startup_error(&["--config", config.to_str().unwrap()], "already in use");
}

#[test]
fn bad_toml() {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "toml");
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        "node_id = 1\naz = \"a\"\ndata_dir = \"/tmp\"\nbase_port = [1,\n",
    )
    .unwrap();
    expect_startup_error(&["--config", config.to_str().unwrap()], "bad config");
    std::fs::write(
        &config,
        "node_id = 1\naz = \"a\"\ndata_dir = \"/tmp\"\nbase_port = 7000\nshard = 2\n",
    )
    .unwrap();
    expect_startup_error(
        &["--config", config.to_str().unwrap()],
        "unknown field `shard`",
    );
}

#[test]
fn io_uring_blocked_by_seccomp() {
    // deny-io-uring makes io_uring_setup fail with EPERM, like a container's default profile.
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "uring");
    let config = write_config(&dir, free_ports(1), &small());
    let node = bin();
    let (code, stderr) = run_to_exit(
        Path::new(env!("CARGO_BIN_EXE_deny-io-uring")),
        &[node.to_str().unwrap(), "--config", config.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(
        matches!(code, Some(c) if c != 0),
        "expected failure, got {code:?}: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hexad-node: error: io_uring is unavailable"),
        "{stderr}"
    );
    assert!(last.contains("seccomp"), "{last}");
}

#[test]
fn corruption_in_the_middle_of_the_log_is_reported_and_later_records_kept() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "corrupt");
    let port = free_ports(1);
    let config = write_config(&dir, port, &small());
    let node = NodeProcess::start(&bin(), &config, port);
    // One append at a time: each becomes its own 4 KiB block, block k holding LSN k.
    for lsn in 1..=30 {
        append(&node, &[lsn]);
    }
    node.kill9();
    let log = dir.join("data/shard-0/hotlog-0000.log");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .unwrap();
    let at = 9 * 4096 + 100; // inside block 10
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let node = NodeProcess::start(&bin(), &config, port);
    let Message::Stats(stats) = node.connect(0).call(&Message::GetStats).unwrap() else {
        panic!()
    };
    assert_eq!(
        stats.corrupt_blocks, 1,
        "the rotten block is reported, not taken for the end of the log"
    );
    let reply = node
        .connect(0)
        .call(&Message::FetchRecords {
            volume: VOLUME,
            pg: PG,
            after_lsn: Lsn(0),
            to_lsn: Lsn(100),
            max_bytes: 1 << 20,
        })
        .unwrap();
    let Message::Records { records, .. } = reply else {
        panic!("{reply:?}")
    };
    let lsns: Vec<u64> = records.iter().map(|r| r.lsn.0).collect();
    let expected: Vec<u64> = (1..=30).filter(|&l| l != 10).collect();
    assert_eq!(lsns, expected, "records after the corrupt block survive");
    assert_eq!(
        state(&node),
        (Lsn(9), Lsn(30)),
        "SCL stops at the hole until a peer fills it"
    );
}

#[test]
fn an_older_volume_epoch_is_refused_also_after_a_restart() {
    use hexad_client::wire::ErrorCode;
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "epoch");
    let port = free_ports(1);
    let config = write_config(&dir, port, &small());
    let batch = |epoch: u64, lsn: u64| Message::AppendBatch {
        volume: VOLUME,
        pg: PG,
        volume_epoch: VolumeEpoch(epoch),
        membership_epoch: MembershipEpoch(1),
        records: vec![test_record(PG, lsn, lsn - 1, 64)],
    };
    let node = NodeProcess::start(&bin(), &config, port);
    let mut c = node.connect(0);
    assert!(matches!(
        c.call(&batch(5, 1)).unwrap(),
        Message::AppendAck { .. }
    ));
    match c.call(&batch(4, 2)).unwrap() {
        Message::Error {
            code: ErrorCode::StaleEpoch,
            message,
            ..
        } => {
            assert!(
                message.contains("epoch 4") && message.contains('5'),
                "{message}"
            );
        }
        other => panic!("an older writer's batch was not refused: {other:?}"),
    }
    // Not a protocol error: the connection stays usable for the current epoch.
    assert!(matches!(
        c.call(&batch(5, 2)).unwrap(),
        Message::AppendAck { .. }
    ));
    node.kill9();
    let node = NodeProcess::start(&bin(), &config, port);
    match node.connect(0).call(&batch(4, 3)).unwrap() {
        Message::Error {
            code: ErrorCode::StaleEpoch,
            ..
        } => {}
        other => panic!("after a restart the node forgot the volume epoch: {other:?}"),
    }
    let Message::SegmentState {
        volume_epoch,
        highest_lsn,
        ..
    } = node
        .connect(0)
        .call(&Message::GetSegmentState {
            volume: VOLUME,
            pg: PG,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (volume_epoch, highest_lsn),
        (VolumeEpoch(5), Lsn(2)),
        "the refused records were not stored"
    );
}

/// A segment with a hole in its PG (SCL short of the read point) still answers a page read
/// when the reader names the page's last record and the page's own backlink chain from it
/// is complete there; without that word, with a stale one, or with a chain that ends in a
/// bound (a writer's first write of the page after an open) it answers `NotComplete`.
#[test]
fn a_page_read_past_a_hole_is_answered_when_the_page_chain_is_complete() {
    use hexad_client::wire::{ErrorCode, Op, PageLink, Record};
    use hexad_client::{PageNo, PAGE_BYTES};
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "chain");
    let port = free_ports(1);
    let config = write_config(&dir, port, &small());
    let node = NodeProcess::start(&bin(), &config, port);
    let (p, q, r) = (
        PageNo(PG.first_page().0 + 7),
        PageNo(PG.first_page().0 + 8),
        PageNo(PG.first_page().0 + 9),
    );
    let write = |lsn: u64, page: PageNo, link: PageLink, byte: u8| {
        let mut payload = (8 * lsn as u32).to_le_bytes().to_vec();
        payload.extend([byte; 8]);
        Record::linked(
            Lsn(lsn),
            Lsn(lsn - 1),
            link,
            page,
            Op::WriteBytes,
            true,
            &payload,
        )
    };
    let add = |lsn: u64, page: PageNo, link: PageLink| {
        let mut payload = 1000u32.to_le_bytes().to_vec();
        payload.extend(lsn.to_le_bytes());
        Record::linked(
            Lsn(lsn),
            Lsn(lsn - 1),
            link,
            page,
            Op::AddU64,
            true,
            &payload,
        )
    };
    // Page p at 1, 3 and 5; q's record 4 never arrives; r's first record after an open.
    let records = vec![
        write(1, p, PageLink::Exact(Lsn(0)), 0xa1),
        write(2, q, PageLink::Exact(Lsn(0)), 0xb2),
        add(3, p, PageLink::Exact(Lsn(1))),
        add(5, p, PageLink::Exact(Lsn(3))),
        write(6, r, PageLink::AtMost(Lsn(2)), 0xc6),
    ];
    let mut want = [0u8; PAGE_BYTES];
    for rec in records.iter().filter(|rec| rec.page == p) {
        rec.apply_to(&mut want);
    }
    let mut conn = node.connect(0);
    match conn
        .call(&Message::AppendBatch {
            volume: VOLUME,
            pg: PG,
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            records,
        })
        .unwrap()
    {
        Message::AppendAck { scl, .. } => assert_eq!(scl, Lsn(3), "LSN 4 is missing"),
        other => panic!("{other:?}"),
    }
    let mut get = |page: PageNo, head: u64| {
        conn.call(&Message::GetPage {
            volume: VOLUME,
            pg: PG,
            page,
            read_lsn: Lsn(6),
            complete_lsn: Lsn(6),
            page_head: Lsn(head),
        })
        .unwrap()
    };
    match get(p, 5) {
        Message::Page { page_lsn, data, .. } => {
            assert_eq!(page_lsn, Lsn(5));
            assert!(data[..] == want[..], "page p built from its chain");
        }
        other => panic!("a complete page chain was not accepted: {other:?}"),
    }
    for (page, head, why) in [
        (p, 0, "no page head"),
        (p, 3, "a stale page head"),
        (r, 6, "a chain ending in a bound above the stored version"),
        (q, 4, "a head this segment does not hold"),
    ] {
        match get(page, head) {
            Message::Error {
                code: ErrorCode::NotComplete,
                ..
            } => {}
            other => panic!(
                "{why}: expected NotComplete, got {}",
                &format!("{other:?}")[..120]
            ),
        }
    }
    assert_eq!(
        conn.call(&Message::GetStats)
            .map(|m| match m {
                Message::Stats(stats) => stats.chain_reads,
                other => panic!("{other:?}"),
            })
            .unwrap(),
        1
    );
}
