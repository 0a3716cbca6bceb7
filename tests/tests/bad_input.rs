//! Bad input against a real node: for each kind of malformed request the node replies with
//! an Error where it can, closes that connection, keeps serving every other connection, and
//! loses nothing it acknowledged.

use std::net::Shutdown;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use hexad_client::blocking::{ConnError, Connection};
use hexad_client::placement::segment_shard;
use hexad_client::wire::frame::FrameHeader;
use hexad_client::wire::{ErrorCode, Message, MAX_FRAME_BODY_BYTES};
use hexad_client::{Lsn, MembershipEpoch, PgIndex, VolumeEpoch, VolumeId};
use hexad_tests::{free_ports, fresh_dir, test_record, write_config, NodeOpts, NodeProcess};

const PG: PgIndex = PgIndex(3);

fn start_node(name: &str, shards: u16) -> NodeProcess {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name);
    let port = free_ports(shards);
    let opts = NodeOpts {
        shards,
        file_bytes: 2 << 20,
        file_count: 2,
        ..NodeOpts::default()
    };
    NodeProcess::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node")),
        &write_config(&dir, port, &opts),
        port,
    )
}

/// A volume whose segment `(volume, PG)` lives on shard `shard` of a node with `shards`.
fn volume_on(shard: u16, shards: u16) -> VolumeId {
    (1..10_000)
        .map(VolumeId)
        .find(|v| segment_shard(*v, PG, shards).0 == shard)
        .expect("some volume maps to every shard")
}

fn append(volume: VolumeId, lsn: u64) -> Message {
    Message::AppendBatch {
        volume,
        pg: PG,
        volume_epoch: VolumeEpoch(1),
        membership_epoch: MembershipEpoch(1),
        records: vec![test_record(PG, lsn, lsn - 1, 100)],
    }
}

fn frame(kind: u16, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    FrameHeader::write(&mut out, kind, 77, body);
    out.put_slice(body);
    out
}

fn append_body(volume: VolumeId, lsn: u64) -> Vec<u8> {
    append(volume, lsn).to_frame(1)[32..].to_vec()
}

/// Sends `bad` on a fresh connection while a healthy one keeps appending; checks the reply
/// code (if any), that the bad connection is closed, and that nothing acknowledged is lost.
fn check_rejected(name: &str, expect: Option<ErrorCode>, send: impl FnOnce(&mut Connection)) {
    let node = start_node(name, 1);
    let volume = volume_on(0, 1);
    let mut good = node.connect(0);
    assert!(matches!(
        good.call(&append(volume, 1)).unwrap(),
        Message::AppendAck {
            durable_lsn: Lsn(1),
            ..
        }
    ));

    let mut bad = node.connect(0);
    send(&mut bad);
    match (expect, bad.recv()) {
        (
            Some(code),
            Ok((
                _,
                Message::Error {
                    code: got, message, ..
                },
            )),
        ) => {
            assert_eq!(got, code, "{name}: wrong error code; message: {message}");
            assert!(!message.is_empty());
            assert!(
                matches!(bad.recv(), Err(ConnError::Closed | ConnError::Io(_))),
                "{name}: connection left open"
            );
        }
        (None, Err(ConnError::Closed | ConnError::Io(_))) => {}
        (want, got) => panic!("{name}: expected {want:?} then close, got {got:?}"),
    }

    // The healthy connection still works and the acknowledged records are all there.
    assert!(matches!(
        good.call(&append(volume, 2)).unwrap(),
        Message::AppendAck {
            durable_lsn: Lsn(2),
            scl: Lsn(2),
            ..
        }
    ));
    let reply = good
        .call(&Message::FetchRecords {
            volume,
            pg: PG,
            after_lsn: Lsn(0),
            to_lsn: Lsn(10),
            max_bytes: 1 << 20,
        })
        .unwrap();
    let Message::Records { records, .. } = reply else {
        panic!("{name}: {reply:?}")
    };
    assert_eq!(
        records.iter().map(|r| r.lsn.0).collect::<Vec<_>>(),
        vec![1, 2],
        "{name}"
    );
    assert_eq!(records[0].raw(), test_record(PG, 1, 0, 100).raw());
}

#[test]
fn wrong_magic() {
    check_rejected("magic", Some(ErrorCode::BadFrame), |c| {
        let mut f = frame(3, &append_body(VolumeId(1), 5));
        f[0] = b'Z';
        c.send_raw(&f).unwrap();
    });
}

#[test]
fn wrong_version() {
    check_rejected("version", Some(ErrorCode::BadFrame), |c| {
        let mut f = frame(3, &append_body(VolumeId(1), 5));
        f[4] = 9; // version 9, header CRC recomputed so only the version is wrong
        let crc = crc32c::crc32c(&f[..28]);
        f[28..32].copy_from_slice(&crc.to_le_bytes());
        c.send_raw(&f).unwrap();
    });
}

#[test]
fn bad_body_crc() {
    check_rejected("body-crc", Some(ErrorCode::BadFrame), |c| {
        let mut f = frame(3, &append_body(VolumeId(1), 5));
        let last = f.len() - 1;
        f[last] ^= 0xff;
        c.send_raw(&f).unwrap();
    });
}

#[test]
fn bad_header_crc() {
    check_rejected("header-crc", Some(ErrorCode::BadFrame), |c| {
        let mut f = frame(3, &append_body(VolumeId(1), 5));
        f[8] ^= 1; // request id changed, header CRC not updated
        c.send_raw(&f).unwrap();
    });
}

#[test]
fn length_over_maximum() {
    check_rejected("too-long", Some(ErrorCode::BadFrame), |c| {
        let mut f = frame(3, &[]);
        f[16..20].copy_from_slice(&(MAX_FRAME_BODY_BYTES as u32 + 1).to_le_bytes());
        let crc = crc32c::crc32c(&f[..28]);
        f[28..32].copy_from_slice(&crc.to_le_bytes());
        c.send_raw(&f).unwrap();
    });
}

#[test]
fn unknown_message_kind() {
    check_rejected("kind", Some(ErrorCode::UnknownKind), |c| {
        c.send_raw(&frame(999, &[0; 16])).unwrap();
    });
}

#[test]
fn truncated_frame() {
    check_rejected("truncated-frame", Some(ErrorCode::Malformed), |c| {
        let f = frame(3, &append_body(VolumeId(1), 5));
        c.send_raw(&f[..f.len() - 20]).unwrap();
        c.stream().shutdown(Shutdown::Write).unwrap();
    });
}

#[test]
fn truncated_body() {
    check_rejected("truncated-body", Some(ErrorCode::Malformed), |c| {
        let body = append_body(VolumeId(1), 5);
        c.send_raw(&frame(3, &body[..body.len() - 10])).unwrap();
    });
}

#[test]
fn record_outside_pg() {
    check_rejected("outside-pg", Some(ErrorCode::RecordOutsidePg), |c| {
        let msg = Message::AppendBatch {
            volume: VolumeId(1),
            pg: PG,
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            records: vec![test_record(PgIndex(4), 5, 4, 100)],
        };
        c.send(&msg).unwrap();
    });
}

#[test]
fn zero_lsn() {
    check_rejected("zero-lsn", Some(ErrorCode::InvalidLsn), |c| {
        let mut body = append_body(VolumeId(1), 5);
        // The record starts after the 32-byte batch header; set its LSN and backlink to 0 and
        // fix its CRC so only the LSN is wrong.
        let rec = &mut body[32..];
        rec[0..16].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[..44]), &rec[48..]);
        rec[44..48].copy_from_slice(&crc.to_le_bytes());
        c.send_raw(&frame(3, &body)).unwrap();
    });
}

#[test]
fn lsns_not_increasing_in_a_batch() {
    check_rejected("lsn-order", Some(ErrorCode::InvalidLsn), |c| {
        let msg = Message::AppendBatch {
            volume: VolumeId(1),
            pg: PG,
            volume_epoch: VolumeEpoch(1),
            membership_epoch: MembershipEpoch(1),
            records: vec![test_record(PG, 9, 8, 100), test_record(PG, 7, 6, 100)],
        };
        c.send(&msg).unwrap();
    });
}

#[test]
fn wrong_shard_names_the_owner_and_keeps_the_connection() {
    let node = start_node("wrong-shard", 2);
    let volume = volume_on(1, 2);
    let mut c = node.connect(0);
    let Message::HelloOk { shard_ports, .. } = c.hello().unwrap() else {
        unreachable!()
    };
    assert_eq!(shard_ports, vec![node.port, node.port + 1]);
    match c.call(&append(volume, 1)).unwrap() {
        Message::Error {
            code: ErrorCode::WrongShard,
            detail: 1,
            message,
        } => {
            assert!(
                message.contains("shard 1") && message.contains(&(node.port + 1).to_string()),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Not a protocol error: the connection stays usable, and the owner accepts the batch.
    assert!(matches!(
        c.call(&Message::GetStats).unwrap(),
        Message::Stats(_)
    ));
    assert!(matches!(
        node.connect(1).call(&append(volume, 1)).unwrap(),
        Message::AppendAck { .. }
    ));
}
