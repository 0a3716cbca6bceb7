//! Volume open and recovery across processes (DESIGN §7): a writer killed with SIGKILL,
//! an old writer fenced by a new open, recovery with an AZ and one more node down, and an
//! open interrupted after its truncation step. Writers are `hexad-test-writer` processes;
//! the test reads their acknowledged commits from their stdout and checks them against
//! what a read-only open (and the nodes themselves) hold afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hexad_client::wire::{ErrorCode, Message, Op, Record};
use hexad_client::{Lsn, MembershipEpoch, PageNo, PgIndex, VolumeEpoch, VolumeId};
use hexad_tests::{field, fresh_dir, writer_payload, Cluster, NodeOpts, WriterProcess, IO_TIMEOUT};
use nix::sys::signal::{kill, Signal};

const OPEN_BOUND: Duration = Duration::from_mins(1);
const RUN_BOUND: Duration = Duration::from_mins(2);

fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-node"))
}

fn writer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hexad-test-writer"))
}

fn six(name: &str) -> Cluster {
    let dir = fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name);
    let opts = NodeOpts {
        file_bytes: 4 << 20,
        file_count: 8,
        ..NodeOpts::default()
    };
    Cluster::start(&node_bin(), &dir, 3, 2, &opts)
}

fn writer(c: &Cluster, args: &[&str]) -> WriterProcess {
    WriterProcess::start(&writer_bin(), &c.file, args)
}

/// `seq -> commit LSN` of every ACK line.
fn acked(lines: &[String]) -> BTreeMap<u64, Lsn> {
    lines
        .iter()
        .filter(|l| l.starts_with("ACK "))
        .map(|l| {
            (
                field(l, "seq").parse().unwrap(),
                Lsn(field(l, "lsn").parse().unwrap()),
            )
        })
        .collect()
}

fn issued(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .filter(|l| l.starts_with("ISSUE "))
        .map(|l| field(l, "seq").parse().unwrap())
        .max()
}

/// `(writer, seq, record index)` named at the start of a test-writer payload, if it is one.
fn decode_name(payload: &[u8]) -> Option<(u32, u64, u32)> {
    let mut parts = payload.get(4..)?.split(|b| *b == b'-');
    let mut next = |tag: char| -> Option<u64> {
        std::str::from_utf8(parts.next()?)
            .ok()?
            .strip_prefix(tag)?
            .parse()
            .ok()
    };
    Some((
        u32::try_from(next('w')?).ok()?,
        next('s')?,
        u32::try_from(next('r')?).ok()?,
    ))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A read-only open's view: its VDL and every committed record `lsn -> payload`.
struct Dump {
    vdl: Lsn,
    records: BTreeMap<Lsn, Vec<u8>>,
}

impl Dump {
    fn take(c: &Cluster, volume: &str) -> Dump {
        let w = writer(c, &["--volume", volume, "--read"]);
        let (code, lines) = w.finish(RUN_BOUND);
        assert_eq!(code, Some(0), "read-only open failed: {lines:?}");
        let open = lines
            .iter()
            .find(|l| l.starts_with("OPEN "))
            .expect("OPEN line");
        let vdl = Lsn(field(open, "vdl").parse().unwrap());
        let records = lines
            .iter()
            .filter(|l| l.starts_with("REC "))
            .map(|l| {
                (
                    Lsn(field(l, "lsn").parse().unwrap()),
                    unhex(field(l, "payload")),
                )
            })
            .collect();
        Dump { vdl, records }
    }

    /// `(writer, seq) -> [(record index, lsn)]`.
    fn by_commit(&self) -> BTreeMap<(u32, u64), Vec<(u32, Lsn)>> {
        let mut out: BTreeMap<(u32, u64), Vec<(u32, Lsn)>> = BTreeMap::new();
        for (lsn, p) in &self.records {
            let (w, seq, i) =
                decode_name(p).unwrap_or_else(|| panic!("LSN {lsn}: not a test-writer payload"));
            assert_eq!(
                p,
                &writer_payload(w, seq, i),
                "LSN {lsn}: payload bytes differ"
            );
            out.entry((w, seq)).or_default().push((i, *lsn));
        }
        out
    }

    /// Every acknowledged commit of `writer` is here, whole, with the right bytes, at its LSN;
    /// and every commit here is whole (both records), never half of a mini-transaction.
    fn check(&self, writer: u32, acks: &BTreeMap<u64, Lsn>) {
        let commits = self.by_commit();
        for (seq, lsn) in acks {
            let recs = commits.get(&(writer, *seq)).unwrap_or_else(|| {
                panic!("acknowledged commit w{writer} s{seq} (LSN {lsn}) is missing")
            });
            assert!(
                recs.iter().any(|(i, l)| *i == 1 && l == lsn),
                "w{writer} s{seq}: commit record not at LSN {lsn}: {recs:?}"
            );
            assert!(
                *lsn <= self.vdl,
                "acknowledged LSN {lsn} above the recovered VDL {}",
                self.vdl
            );
        }
        for ((w, seq), recs) in &commits {
            let idx: BTreeSet<u32> = recs.iter().map(|(i, _)| *i).collect();
            assert_eq!(
                idx,
                BTreeSet::from([0, 1]),
                "w{w} s{seq}: half a mini-transaction is visible: {recs:?}"
            );
        }
    }
}

/// Every record each running node holds for `volume` in PGs 0 and 1, straight from the node.
fn raw_records(c: &Cluster, volume: VolumeId) -> Vec<(u32, Record)> {
    let mut out = Vec::new();
    for id in 1..=6u32 {
        if c.nodes[id as usize - 1].is_none() {
            continue;
        }
        let mut conn =
            hexad_client::blocking::Connection::connect(c.node(id).addr(0), IO_TIMEOUT).unwrap();
        for pg in [PgIndex(0), PgIndex(1)] {
            let mut after = Lsn::NONE;
            loop {
                let reply = conn
                    .call(&Message::FetchRecords {
                        volume,
                        pg,
                        after_lsn: after,
                        to_lsn: Lsn(u64::MAX),
                        max_bytes: 4 << 20,
                    })
                    .unwrap();
                match reply {
                    Message::Records { more, records, .. } => {
                        after = records.last().map_or(after, |r| r.lsn);
                        out.extend(records.into_iter().map(|r| (id, r)));
                        if !more {
                            break;
                        }
                    }
                    Message::Error {
                        code: ErrorCode::NoSuchSegment,
                        ..
                    } => break,
                    other => panic!("node {id}: {other:?}"),
                }
            }
        }
    }
    out
}

/// Plants the ragged edge a writer leaves when it dies with records in flight: on nodes 1
/// and 4, a record of PG 0 past a hole in the volume's LSNs, chained to the newest record
/// of PG 0 the node holds, and flagged CPL (so a careless open would commit it).
/// Returns its LSN.
fn plant_ragged_edge(c: &Cluster, volume: VolumeId, epoch: VolumeEpoch) -> Lsn {
    let held = raw_records(c, volume);
    let top = held
        .iter()
        .map(|(_, r)| r.lsn)
        .max()
        .expect("records written");
    let lsn = Lsn(top.0 + 50);
    for node in [1, 4] {
        let prev = held
            .iter()
            .filter(|(n, r)| *n == node && r.page.pg() == PgIndex(0))
            .map(|(_, r)| r.lsn)
            .max()
            .unwrap_or(Lsn::NONE);
        let record = Record::new(
            lsn,
            prev,
            Lsn::NONE,
            PageNo(3),
            Op::WriteBytes,
            true,
            &writer_payload(9, 0, 1),
        );
        let mut conn =
            hexad_client::blocking::Connection::connect(c.node(node).addr(0), IO_TIMEOUT).unwrap();
        let reply = conn
            .call(&Message::AppendBatch {
                volume,
                pg: PgIndex(0),
                volume_epoch: epoch,
                membership_epoch: MembershipEpoch(1),
                records: vec![record],
            })
            .unwrap();
        match reply {
            // Where the node's own chain is whole, the planted record extends its SCL: the
            // open must then distrust that SCL. (A node with a hole of its own below is
            // merely one more holder of a record past a hole.)
            Message::AppendAck { .. } => {}
            other => panic!("node {node}: {other:?}"),
        }
    }
    lsn
}

fn wait_acks(w: &mut WriterProcess, n: usize) {
    for _ in 0..n {
        w.wait_for("ACK ", OPEN_BOUND);
    }
}

#[test]
fn acknowledged_commits_survive_a_killed_writer_and_writes_continue() {
    let mut c = six("recovery-kill9");
    let mut a = writer(&c, &["--volume", "11", "--writer", "1"]);
    a.wait_for("OPEN ", OPEN_BOUND);
    wait_acks(&mut a, 200);
    // Node 2 misses the second half (down while it is written): the open must bring it
    // up to the tail.
    c.kill(2);
    wait_acks(&mut a, 200);
    let a_lines = a.kill9();
    c.restart(2);
    let a_acks = acked(&a_lines);
    let planted = plant_ragged_edge(&c, VolumeId(11), VolumeEpoch(1));

    let mut b = writer(&c, &["--volume", "11", "--writer", "2", "--commits", "200"]);
    let open = b.wait_for("OPEN ", OPEN_BOUND);
    let (code, b_lines) = b.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{b_lines:?}");
    let vdl = Lsn(field(&open, "vdl").parse().unwrap());
    let after = Lsn(field(&open, "allocate_after").parse().unwrap());
    assert!(
        after > vdl && vdl < planted && planted <= after,
        "{open}; planted {planted}"
    );
    assert!(
        field(&open, "replicated").parse::<u64>().unwrap() > 0,
        "node 2 needed records: {open}"
    );
    assert!(
        a_acks.values().all(|l| *l <= vdl),
        "an acknowledged commit is above the new VDL {vdl}"
    );

    // Nothing of the dead writer's ragged edge is left on any node.
    for (node, r) in raw_records(&c, VolumeId(11)) {
        assert!(
            !(r.lsn > vdl && r.lsn <= after),
            "node {node} still holds LSN {} inside the truncated range ({vdl}, {after}]",
            r.lsn
        );
    }
    // Re-replication made node 2 whole: it holds what node 3 holds up to VDL.
    let held = raw_records(&c, VolumeId(11));
    let upto = |node: u32| -> BTreeSet<Lsn> {
        held.iter()
            .filter(|(n, r)| *n == node && r.lsn <= vdl)
            .map(|(_, r)| r.lsn)
            .collect()
    };
    assert_eq!(upto(2), upto(3), "node 2 was not brought up to the tail");
    // The epoch and the range are durable: after SIGKILL and restart of the nodes that held
    // the planted record, the hot-log scan does not bring it back, and the dead writer's
    // epoch is still refused.
    for node in [1, 4] {
        c.kill(node);
        c.restart(node);
    }
    for (node, r) in raw_records(&c, VolumeId(11)) {
        assert!(
            r.lsn <= vdl || r.lsn > after,
            "after a restart node {node} holds LSN {} inside ({vdl}, {after}]",
            r.lsn
        );
    }
    for node in [1, 4] {
        let mut conn =
            hexad_client::blocking::Connection::connect(c.node(node).addr(0), IO_TIMEOUT).unwrap();
        let late = Record::new(
            Lsn(after.0 + 1_000_000),
            Lsn::NONE,
            Lsn::NONE,
            PageNo(5),
            Op::WriteBytes,
            true,
            &writer_payload(9, 1, 1),
        );
        let reply = conn
            .call(&Message::AppendBatch {
                volume: VolumeId(11),
                pg: PgIndex(0),
                volume_epoch: VolumeEpoch(1),
                membership_epoch: MembershipEpoch(1),
                records: vec![late],
            })
            .unwrap();
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::StaleEpoch,
                    ..
                }
            ),
            "node {node} after restart: {reply:?}"
        );
    }
    let dump = Dump::take(&c, "11");
    dump.check(1, &a_acks);
    dump.check(2, &acked(&b_lines));
    assert_eq!(acked(&b_lines).len(), 200);
    eprintln!(
        "writer 1: {} acks before SIGKILL; reopened at VDL {vdl} ({open}); read-only VDL {}",
        a_acks.len(),
        dump.vdl
    );
}

#[test]
fn an_old_writer_is_fenced_by_every_node_after_a_new_open() {
    let c = six("recovery-fence");
    let mut a = writer(&c, &["--volume", "12", "--writer", "1"]);
    a.wait_for("OPEN ", OPEN_BOUND);
    wait_acks(&mut a, 200);
    kill(a.pid(), Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    a.drain();
    let issued_before = issued(&a.seen).expect("writer 1 issued commits");

    let mut b = writer(&c, &["--volume", "12", "--writer", "2", "--commits", "100"]);
    let open = b.wait_for("OPEN ", OPEN_BOUND);
    let vdl = Lsn(field(&open, "vdl").parse().unwrap());
    let (code, b_lines) = b.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{b_lines:?}");

    kill(a.pid(), Signal::SIGCONT).unwrap();
    let (code, a_lines) = a.finish(RUN_BOUND);
    assert_eq!(
        code,
        Some(3),
        "the old writer must end fenced: {:?}",
        &a_lines[a_lines.len().saturating_sub(5)..]
    );
    assert!(a_lines.iter().any(|l| l.starts_with("FENCED ")));
    // Whatever the old writer saw acknowledged, before or after the pause, the new open found.
    let a_acks = acked(&a_lines);
    assert!(
        a_acks.values().all(|l| *l <= vdl),
        "the old writer got an ack above the new VDL {vdl}"
    );

    // No node took any record the old writer issued after it resumed.
    for (node, r) in raw_records(&c, VolumeId(12)) {
        if let Some((1, seq, _)) = decode_name(r.payload()) {
            assert!(
                seq <= issued_before,
                "node {node} holds w1 s{seq}, issued after the new open"
            );
        }
    }
    let dump = Dump::take(&c, "12");
    dump.check(1, &a_acks);
    dump.check(2, &acked(&b_lines));
}

#[test]
fn recovery_reads_with_three_nodes_down_and_writes_once_a_quorum_returns() {
    let mut c = six("recovery-az-down");
    let a = writer(&c, &["--volume", "13", "--writer", "1", "--commits", "300"]);
    let (code, a_lines) = a.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{a_lines:?}");
    let a_acks = acked(&a_lines);
    assert_eq!(a_acks.len(), 300);

    // An AZ (nodes 1, 2) and one more node (3) down: a read quorum is left, no write quorum.
    for id in [1, 2, 3] {
        c.kill(id);
    }
    let dump = Dump::take(&c, "13");
    dump.check(1, &a_acks);

    // One more down and not even a read quorum is left: a clear error naming the PG and
    // the silent nodes.
    c.kill(4);
    let r = writer(
        &c,
        &["--volume", "13", "--read", "--open-timeout-ms", "1500"],
    );
    let (code, lines) = r.finish(RUN_BOUND);
    assert_eq!(code, Some(2), "{lines:?}");
    let error = lines
        .iter()
        .find(|l| l.starts_with("ERROR "))
        .expect("ERROR line");
    for needle in ["PG 0", "node 1 (", "node 2 (", "node 3 (", "node 4 ("] {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
    eprintln!("with 4 nodes down: {error}");
    c.restart(4);

    let mut b = writer(&c, &["--volume", "13", "--writer", "2", "--commits", "20"]);
    let waiting = b.wait_for("WAIT ", OPEN_BOUND);
    assert!(waiting.contains("write quorum"), "{waiting}");
    assert!(!b.seen.iter().any(|l| l.starts_with("OPEN ")));
    c.restart(3);
    b.wait_for("OPEN ", OPEN_BOUND);
    let (code, b_lines) = b.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{b_lines:?}");
    let dump = Dump::take(&c, "13");
    dump.check(1, &a_acks);
    dump.check(2, &acked(&b_lines));
}

#[test]
fn an_open_interrupted_after_truncation_and_repeated_gives_the_same_vdl_and_data() {
    let c = six("recovery-interrupted");
    let mut a = writer(&c, &["--volume", "14", "--writer", "1"]);
    a.wait_for("OPEN ", OPEN_BOUND);
    wait_acks(&mut a, 300);
    let a_acks = acked(&a.kill9());
    let planted = plant_ragged_edge(&c, VolumeId(14), VolumeEpoch(1));

    let b = writer(&c, &["--volume", "14", "--stop-after", "truncated"]);
    let (code, b_lines) = b.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{b_lines:?}");
    let stopped = b_lines
        .iter()
        .find(|l| l.starts_with("STOPPED "))
        .expect("STOPPED line");
    let first_vdl = Lsn(field(stopped, "vdl").parse().unwrap());
    assert!(first_vdl < planted);
    let first = Dump::take(&c, "14");
    assert_eq!(first.vdl, first_vdl);
    first.check(1, &a_acks);

    let again = writer(&c, &["--volume", "14", "--open-only"]);
    let (code, lines) = again.finish(RUN_BOUND);
    assert_eq!(code, Some(0), "{lines:?}");
    let open = lines
        .iter()
        .find(|l| l.starts_with("OPEN "))
        .expect("OPEN line");
    assert_eq!(
        Lsn(field(open, "vdl").parse().unwrap()),
        first_vdl,
        "{open}"
    );
    let second = Dump::take(&c, "14");
    assert_eq!(second.vdl, first_vdl);
    assert_eq!(
        second.records, first.records,
        "the repeated open changed the data"
    );
}

#[test]
fn of_two_concurrent_opens_only_the_later_epoch_keeps_writing() {
    let c = six("recovery-concurrent");
    let mut w1 = writer(&c, &["--volume", "15", "--writer", "1"]);
    let mut w2 = writer(&c, &["--volume", "15", "--writer", "2"]);
    let first = [
        w1.wait_for_any(&["OPEN ", "FENCED "], OPEN_BOUND),
        w2.wait_for_any(&["OPEN ", "FENCED "], OPEN_BOUND),
    ];
    // Both may have opened (one after the other); the earlier epoch is then fenced at its
    // next append. Give them time to collide.
    std::thread::sleep(Duration::from_secs(2));
    w1.drain();
    w2.drain();
    let fenced = |w: &WriterProcess| w.seen.iter().any(|l| l.starts_with("FENCED "));
    let (loser, winner, winner_id, loser_id) = match (fenced(&w1), fenced(&w2)) {
        (true, false) => (w1, w2, 2, 1),
        (false, true) => (w2, w1, 1, 2),
        other => panic!("exactly one writer must be fenced, got {other:?}; opens: {first:?}"),
    };
    let (code, loser_lines) = loser.finish(RUN_BOUND);
    assert_eq!(code, Some(3));
    let mut winner = winner;
    let open = winner
        .seen
        .iter()
        .find(|l| l.starts_with("OPEN "))
        .cloned()
        .expect("winner opened");
    let before = acked(&winner.seen).len();
    wait_acks(&mut winner, 100);
    let winner_lines = winner.kill9();
    assert!(
        acked(&winner_lines).len() >= before + 100,
        "the winner kept committing"
    );
    let vdl = Lsn(field(&open, "vdl").parse().unwrap());
    let loser_acks = acked(&loser_lines);
    assert!(
        loser_acks.values().all(|l| *l <= vdl),
        "the fenced writer had an ack above the winner's recovered VDL {vdl}"
    );
    let dump = Dump::take(&c, "15");
    dump.check(loser_id, &loser_acks);
    dump.check(winner_id, &acked(&winner_lines));
    eprintln!(
        "writer {winner_id} won ({open}); writer {loser_id} fenced after {} acks",
        loser_acks.len()
    );
}
