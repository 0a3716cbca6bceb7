//! The checked-in frame of protocol version 1 must keep decoding to the same message.
//! Regenerate (only for a new version, as a new file) with `HEXAD_WRITE_FIXTURES=1`.

use super::*;
use crate::wire::frame::take_frame;
use crate::wire::record::Op;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/append-batch-v1.bin");

fn expected() -> Message {
    let mut add = 16u32.to_le_bytes().to_vec();
    add.extend(5u64.to_le_bytes());
    let mut write = 100u32.to_le_bytes().to_vec();
    write.extend(b"hexad");
    Message::AppendBatch {
        volume: VolumeId(7),
        pg: PgIndex(2),
        volume_epoch: VolumeEpoch(3),
        membership_epoch: MembershipEpoch(4),
        records: vec![
            Record::new(
                Lsn(10),
                Lsn(9),
                Lsn(0),
                PageNo(2_621_441),
                Op::WriteBytes,
                false,
                &write,
            ),
            Record::new(
                Lsn(11),
                Lsn(10),
                Lsn(10),
                PageNo(2_621_441),
                Op::AddU64,
                true,
                &add,
            ),
        ],
    }
}

#[test]
fn version_1_frame_still_decodes() {
    if std::env::var_os("HEXAD_WRITE_FIXTURES").is_some() {
        std::fs::write(PATH, expected().to_frame(99)).unwrap();
    }
    let bytes = std::fs::read(PATH).expect("fixture present");
    let mut buf = BytesMut::from(&bytes[..]);
    let (h, body) = take_frame(&mut buf).unwrap().unwrap();
    assert_eq!(h.request_id, 99);
    assert_eq!(Message::decode(h.kind, body).unwrap(), expected());
}
