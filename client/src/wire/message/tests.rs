//! Round trips and robustness of every message encoding.

use super::*;
use crate::wire::frame::take_frame;
use crate::wire::record::Op;
use proptest::prelude::*;

fn arb_records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(
        (
            1u64..1 << 40,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        0..8,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(lsn, page, data)| {
                let mut p = 16u32.to_le_bytes().to_vec();
                p.extend(data);
                Record::new(
                    Lsn(lsn),
                    Lsn(lsn - 1),
                    Lsn(0),
                    PageNo(page),
                    Op::WriteBytes,
                    lsn % 2 == 0,
                    &p,
                )
            })
            .collect()
    })
}

fn arb_truncation() -> impl Strategy<Value = Truncation> {
    (any::<u64>(), any::<u64>(), 0u64..1 << 40, any::<bool>()).prop_map(
        |(epoch, start, len, sealed)| Truncation {
            epoch: VolumeEpoch(epoch),
            start: Lsn(start),
            end: Lsn(start.saturating_add(len)),
            sealed,
        },
    )
}

fn arb_membership() -> impl Strategy<Value = Membership> {
    use crate::membership::Members;
    let set = || {
        proptest::sample::subsequence((1u32..=9).collect::<Vec<_>>(), 6)
            .prop_map(|v| std::array::from_fn(|i| NodeId(v[i])))
    };
    prop_oneof![
        Just(Membership::placement()),
        (2u64..1 << 40, set()).prop_map(|(e, s)| Membership {
            epoch: MembershipEpoch(e),
            members: Members::Stable(s),
        }),
        (2u64..1 << 40, set(), set())
            .prop_filter("two different sets", |(_, a, b)| a != b)
            .prop_map(|(e, old, new)| Membership {
                epoch: MembershipEpoch(e),
                members: Members::Transitional { old, new },
            }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u16>().prop_map(|v| Message::Hello {
            protocol_version: v
        }),
        (
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(any::<u16>(), 1..16)
        )
            .prop_map(|(v, n, ports)| Message::HelloOk {
                protocol_version: v,
                node_id: NodeId(n),
                shard: ShardId((ports.len() - 1) as u16),
                shard_ports: ports,
            }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            arb_records()
        )
            .prop_map(|(v, pg, ve, me, records)| Message::AppendBatch {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                volume_epoch: VolumeEpoch(ve),
                membership_epoch: MembershipEpoch(me),
                records,
            }),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(v, pg, d, s)| {
            Message::AppendAck {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                durable_lsn: Lsn(d),
                scl: Lsn(s),
            }
        }),
        (any::<u64>(), any::<u32>()).prop_map(|(v, pg)| Message::GetSegmentState {
            volume: VolumeId(v),
            pg: PgIndex(pg)
        }),
        (any::<u64>(), any::<u32>(), any::<[u64; 5]>()).prop_map(|(v, pg, a)| {
            Message::SegmentState {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                scl: Lsn(a[0]),
                highest_lsn: Lsn(a[1]),
                record_count: a[2],
                volume_epoch: VolumeEpoch(a[3]),
                membership_epoch: MembershipEpoch(a[4]),
            }
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(v, pg, a, t, m)| {
                Message::FetchRecords {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    after_lsn: Lsn(a),
                    to_lsn: Lsn(t),
                    max_bytes: m,
                }
            }),
        (any::<u64>(), any::<u32>(), any::<bool>(), arb_records()).prop_map(
            |(v, pg, more, records)| {
                Message::Records {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    more,
                    records,
                }
            }
        ),
        Just(Message::GetStats),
        any::<u64>().prop_map(|v| Message::ListSegments {
            volume: VolumeId(v)
        }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u32>(), 0..20)
        )
            .prop_map(|(v, e, pgs)| Message::SegmentList {
                volume: VolumeId(v),
                max_epoch: VolumeEpoch(e),
                pgs: pgs.into_iter().map(PgIndex).collect(),
            }),
        (any::<u64>(), any::<u32>(), any::<u64>(), 0u8..4).prop_map(|(v, pg, e, m)| {
            Message::Fence {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                epoch: VolumeEpoch(e),
                mode: [
                    FenceMode::Look,
                    FenceMode::Raise,
                    FenceMode::Exclusive,
                    FenceMode::Volume,
                ][usize::from(m)],
            }
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            any::<[u64; 4]>(),
            arb_truncation(),
            arb_truncation()
        )
            .prop_map(|(v, pg, exists, a, latest, latest_sealed)| {
                Message::FenceOk {
                    volume: VolumeId(v),
                    pg: PgIndex(pg),
                    view: SegmentView {
                        exists,
                        volume_epoch: VolumeEpoch(a[0]),
                        scl: Lsn(a[1]),
                        highest_lsn: Lsn(a[2]),
                        latest,
                        latest_sealed,
                        writer_vdl: Lsn(a[3]),
                    },
                }
            }),
        (any::<u64>(), any::<u32>(), arb_truncation()).prop_map(|(v, pg, truncation)| {
            Message::Truncate {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                truncation,
            }
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(v, pg, a, t, m)| Message::FetchIndex {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                after_lsn: Lsn(a),
                to_lsn: Lsn(t),
                max_entries: m,
            }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec((any::<u64>(), any::<u64>(), any::<bool>()), 0..20)
        )
            .prop_map(|(v, pg, more, e)| Message::Index {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                more,
                entries: e
                    .into_iter()
                    .map(|(l, p, cpl)| IndexEntry {
                        lsn: Lsn(l),
                        prev_lsn_pg: Lsn(p),
                        cpl,
                    })
                    .collect(),
            }),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<[u64; 3]>()).prop_map(|(v, pg, p, l)| {
            Message::GetPage {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                page: PageNo(p),
                read_lsn: Lsn(l[0]),
                complete_lsn: Lsn(l[1]),
                page_head: Lsn(l[2]),
            }
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u8>()
        )
            .prop_map(|(v, pg, p, l, fill)| Message::Page {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                page: PageNo(p),
                page_lsn: Lsn(l),
                data: Bytes::from(vec![fill; PAGE_BYTES]),
            }),
        (
            any::<u64>(),
            any::<[u64; 2]>(),
            proptest::collection::vec((any::<u32>(), any::<u64>()), 0..10)
        )
            .prop_map(|(v, l, pgs)| Message::Progress {
                volume: VolumeId(v),
                vdl: Lsn(l[0]),
                pgmrpl: Lsn(l[1]),
                pgs: pgs.into_iter().map(|(p, l)| (PgIndex(p), Lsn(l))).collect(),
            }),
        any::<u64>().prop_map(|v| Message::ProgressAck {
            volume: VolumeId(v)
        }),
        (any::<[u64; 2]>(), any::<u32>(), any::<bool>()).prop_map(|(a, slot, release)| {
            Message::ClaimReaderSlot {
                volume: VolumeId(a[0]),
                reader: a[1],
                slot,
                release,
            }
        }),
        (any::<[u64; 4]>(), any::<[u32; 2]>()).prop_map(|(a, b)| Message::PullRecords {
            volume: VolumeId(a[0]),
            pg: PgIndex(b[0]),
            membership_epoch: MembershipEpoch(a[1]),
            after_lsn: Lsn(a[2]),
            to_lsn: Lsn(a[3]),
            max_bytes: b[1],
        }),
        (any::<[u64; 4]>(), any::<[u32; 2]>()).prop_map(|(a, b)| Message::GetBaseline {
            volume: VolumeId(a[0]),
            pg: PgIndex(b[0]),
            membership_epoch: MembershipEpoch(a[1]),
            pin: Lsn(a[2]),
            from_extent: a[3],
            max_bytes: b[1],
        }),
        (
            any::<[u64; 4]>(),
            any::<u32>(),
            proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u8>()), 0..3),
            proptest::collection::vec(any::<[u64; 3]>(), 0..3),
        )
            .prop_map(|(a, pg, pages, ranges)| Message::Baseline {
                volume: VolumeId(a[0]),
                pg: PgIndex(pg),
                floor: Lsn(a[1]),
                volume_epoch: VolumeEpoch(a[2]),
                next_extent: a[3],
                truncations: ranges
                    .into_iter()
                    .map(|r| Truncation {
                        epoch: VolumeEpoch(r[0]),
                        start: Lsn(r[1].min(r[2])),
                        end: Lsn(r[1].max(r[2])),
                        sealed: r[0] % 2 == 0,
                    })
                    .collect(),
                pages: pages
                    .into_iter()
                    .map(|(page, lsn, fill)| {
                        BaselinePage::new(
                            PageNo(page),
                            Lsn(lsn),
                            Bytes::from(vec![fill; PAGE_BYTES]),
                        )
                    })
                    .collect(),
            }),
        Just(Message::GetSegmentStats),
        proptest::collection::vec((any::<[u64; 12]>(), any::<[u32; 2]>(), 0u8..3), 0..4).prop_map(
            |v| Message::SegmentStats {
                segments: v
                    .into_iter()
                    .map(|(a, b, phase)| SegmentStat {
                        volume: VolumeId(a[0]),
                        pg: PgIndex(b[0]),
                        holes: b[1],
                        scl: Lsn(a[1]),
                        floor: Lsn(a[2]),
                        highest_lsn: Lsn(a[3]),
                        records: a[4],
                        volume_epoch: VolumeEpoch(a[5]),
                        membership_epoch: MembershipEpoch(a[6]),
                        gossip_records: a[7],
                        gossip_bytes: a[8],
                        rebuild_pages: a[9],
                        rebuild_bytes: a[10],
                        rebuild: [
                            RebuildPhase::None,
                            RebuildPhase::Copying,
                            RebuildPhase::CatchingUp
                        ][usize::from(phase)],
                    })
                    .collect(),
            }
        ),
        (any::<[u64; 2]>(), any::<[u32; 2]>()).prop_map(|(a, b)| Message::ReaderSlot {
            volume: VolumeId(a[0]),
            holder: a[1],
            slot: b[0],
            lease_ms: b[1],
        }),
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(v, pg, s)| {
            Message::TruncateAck {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                scl: Lsn(s),
            }
        }),
        any::<[u64; 23]>().prop_map(|a| Message::Stats(NodeStats::from_array(a))),
        (any::<u64>(), any::<u32>()).prop_map(|(v, pg)| Message::GetMembership {
            volume: VolumeId(v),
            pg: PgIndex(pg),
        }),
        (any::<u64>(), any::<u32>(), arb_membership()).prop_map(|(v, pg, membership)| {
            Message::SetMembership {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                membership,
            }
        }),
        (any::<u64>(), any::<u32>(), arb_membership(), any::<u64>()).prop_map(
            |(v, pg, membership, scl)| Message::MembershipIs {
                volume: VolumeId(v),
                pg: PgIndex(pg),
                membership,
                scl: Lsn(scl),
            }
        ),
        (0usize..16, any::<u32>(), ".{0,40}").prop_map(|(c, detail, message)| Message::Error {
            code: ErrorCode::from_u16(c as u16 + 1).unwrap(),
            detail,
            message,
        }),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(msg in arb_message(), id: u64) {
        let mut buf = BytesMut::from(&msg.to_frame(id)[..]);
        let (h, body) = take_frame(&mut buf).unwrap().unwrap();
        prop_assert_eq!(h.request_id, id);
        prop_assert_eq!(Message::decode(h.kind, body).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bodies_never_panic(kind in 0u16..40, body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Message::decode(kind, Bytes::from(body));
    }

    #[test]
    fn truncated_bodies_are_errors(msg in arb_message(), cut in 1usize..64) {
        let frame = msg.to_frame(1);
        let body = frame.slice(FRAME_HEADER_BYTES..);
        // A Stats body cut to its first 8, 15, 17, 19 or 22 fields is what an older node sends,
        // and a GetPage without its page head (40 of 48 bytes) what an older client sends:
        // valid.
        let left = body.len().saturating_sub(cut);
        let older = match msg {
            Message::Stats(_) => [64, 120, 136, 152, 176].contains(&left),
            Message::GetPage { .. } => left == 40,
            _ => false,
        };
        if body.len() >= cut && !matches!(msg, Message::GetStats) && !older {
            let short = body.slice(..body.len() - cut);
            prop_assert!(Message::decode(msg.kind(), short).is_err());
        }
    }
}
