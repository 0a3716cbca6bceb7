//! Durability under kill -9: a real hexad-node takes pipelined appends from several
//! connections, is `SIGKILLed` at a random moment, restarts, and must still hold every
//! record it acknowledged, byte for byte, with an SCL that matches what it holds.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hexad_client::wire::{Message, Record};
use hexad_client::{Lsn, MembershipEpoch, PgIndex, VolumeEpoch, VolumeId};
use hexad_tests::{free_ports, fresh_dir, test_record, write_config, NodeOpts, NodeProcess};

const WRITERS: u64 = 4;
const PIPELINE_DEPTH: usize = 8;
const RECORD_PAYLOAD_BYTES: usize = 200;
const PG: PgIndex = PgIndex(0);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

/// Appends until the connection dies; returns every LSN the node acknowledged.
fn write_until_killed(
    node_addr: std::net::SocketAddr,
    volume: VolumeId,
    mut next: u64,
    seed: u64,
) -> BTreeSet<u64> {
    let mut acked = BTreeSet::new();
    let Ok(mut conn) =
        hexad_client::blocking::Connection::connect(node_addr, hexad_tests::IO_TIMEOUT)
    else {
        return acked;
    };
    let mut rng = seed | 1;
    let mut in_flight: HashMap<u64, (u64, u64)> = HashMap::new();
    loop {
        while in_flight.len() < PIPELINE_DEPTH {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let count = 1 + rng % 8;
            let records: Vec<Record> = (next..next + count)
                .map(|l| test_record(PG, l, l - 1, RECORD_PAYLOAD_BYTES))
                .collect();
            let msg = Message::AppendBatch {
                volume,
                pg: PG,
                volume_epoch: VolumeEpoch(1),
                membership_epoch: MembershipEpoch(1),
                records,
            };
            let Ok(id) = conn.send(&msg) else {
                return acked;
            };
            in_flight.insert(id, (next, next + count - 1));
            next += count;
        }
        match conn.recv() {
            Ok((id, Message::AppendAck { durable_lsn, .. })) => {
                let (first, last) = in_flight.remove(&id).expect("ack for a request in flight");
                assert_eq!(durable_lsn, Lsn(last), "ack names the batch's last LSN");
                acked.extend(first..=last);
            }
            Ok((_, other)) => panic!("unexpected reply while writing: {other:?}"),
            Err(_) => return acked,
        }
    }
}

/// Fetches the segment's records (every one when `check_from` is 1, else those at or above
/// it, which is what a cycle wrote); checks each fetched record byte for byte against what
/// the test wrote, and returns the LSNs present and the node's SCL.
fn read_back(node: &NodeProcess, volume: VolumeId, check_from: u64) -> (BTreeSet<u64>, Lsn) {
    let mut conn = node.connect(0);
    let mut present = BTreeSet::new();
    let mut after = Lsn(check_from - 1);
    loop {
        let reply = conn
            .call(&Message::FetchRecords {
                volume,
                pg: PG,
                after_lsn: after,
                to_lsn: Lsn(u64::MAX),
                max_bytes: 1 << 20,
            })
            .unwrap();
        let Message::Records { records, more, .. } = reply else {
            if matches!(
                reply,
                Message::Error {
                    code: hexad_client::wire::ErrorCode::NoSuchSegment,
                    ..
                }
            ) {
                return (present, Lsn(0));
            }
            panic!("unexpected reply to FetchRecords: {reply:?}");
        };
        for r in &records {
            let expected = test_record(PG, r.lsn.0, r.lsn.0 - 1, RECORD_PAYLOAD_BYTES);
            assert_eq!(
                r.raw(),
                expected.raw(),
                "LSN {} came back with different bytes",
                r.lsn
            );
            present.insert(r.lsn.0);
            after = r.lsn;
        }
        if !more {
            break;
        }
    }
    let Message::SegmentState {
        scl,
        highest_lsn,
        record_count,
        ..
    } = conn
        .call(&Message::GetSegmentState { volume, pg: PG })
        .unwrap()
    else {
        panic!("no segment state");
    };
    if check_from == 1 {
        assert_eq!(record_count, present.len() as u64);
    }
    assert_eq!(
        highest_lsn.0,
        present
            .iter()
            .next_back()
            .copied()
            .unwrap_or(check_from - 1)
    );
    (present, scl)
}

/// The SCL of a chain `1 -> 2 -> 3 ...` whose records below `from` are all present: the
/// end of its gap-free prefix.
fn expected_scl(present: &BTreeSet<u64>, from: u64) -> u64 {
    let mut scl = from - 1;
    while present.contains(&(scl + 1)) {
        scl += 1;
    }
    scl
}

#[test]
fn acknowledged_records_survive_kill9() {
    let cycles: usize = std::env::var("HEXAD_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("HEXAD_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill9 seed {seed} (replay with HEXAD_KILL_SEED={seed})");
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "kill9");
    let port = free_ports(1);
    // This test appends raw batches and sends no `Progress`, so nothing is coalesced and
    // no hot-log space is released: size the log for every record the cycles write (about
    // 10 MiB per cycle in a debug build).
    // Both ways of making a block durable, in turns: the same files restart under either.
    let config_for = |cycle: usize| {
        let opts = NodeOpts {
            file_bytes: 16 << 20,
            file_count: 24,
            sync: if cycle.is_multiple_of(2) {
                "dsync"
            } else {
                "fdatasync"
            },
            ..NodeOpts::default()
        };
        write_config(&dir, port, &opts)
    };
    let mut acked: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); WRITERS as usize];
    let mut rng = seed | 1;
    let mut total_acked_before_kill = 0usize;
    // Per writer, the first LSN of the last cycle: each restart checks that cycle's records
    // byte for byte (earlier ones were checked after their own kill), the last restart all.
    let mut cycle_start = vec![1u64; WRITERS as usize];
    for cycle in 0..=cycles {
        let node = NodeProcess::start(&bin(), &config_for(cycle), port);
        let mut next = Vec::new();
        for w in 0..WRITERS {
            let volume = VolumeId(w + 1);
            let from = if cycle == cycles {
                1
            } else {
                cycle_start[w as usize]
            };
            let (present, scl) = read_back(&node, volume, from);
            if let Some(lost) = acked[w as usize]
                .range(from..)
                .find(|l| !present.contains(l))
            {
                panic!("cycle {cycle}: volume {volume}: acknowledged LSN {lost} is missing after kill -9 (seed {seed})");
            }
            if scl.0 >= from - 1 || from == 1 {
                assert_eq!(
                    scl.0,
                    expected_scl(&present, from),
                    "cycle {cycle}: volume {volume}: SCL disagrees with the records held"
                );
            }
            let resume = present.iter().next_back().map_or(from, |l| l + 1);
            cycle_start[w as usize] = resume;
            next.push(resume);
        }
        if cycle == cycles {
            break;
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, start) = (node.addr(0), next[w as usize]);
                std::thread::spawn(move || {
                    write_until_killed(addr, VolumeId(w + 1), start, seed ^ w ^ (cycle as u64) << 8)
                })
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 300));
        node.kill9();
        for (w, t) in writers.into_iter().enumerate() {
            let got = t.join().expect("writer thread panicked");
            total_acked_before_kill += got.len();
            acked[w].extend(got);
        }
    }
    let total: usize = acked.iter().map(BTreeSet::len).sum();
    println!("{cycles} kill cycles, {total_acked_before_kill} records acknowledged, all {total} present after restarts");
    assert!(
        total > cycles * 10,
        "too few records were acknowledged ({total}) for the test to mean anything"
    );
}
