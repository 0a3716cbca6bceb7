//! Any bytes as a page-store slot, with both of its CRCs sealed over them (see
//! `record.rs`): it decodes as empty, corrupt or valid, never a panic.
#![no_main]

use hexad_client::{PageNo, PgIndex, VolumeId};
use hexad_node::pagestore::format::{decode, HEADER_BYTES, SLOT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut slot = vec![0u8; SLOT_BYTES];
    let n = data.len().min(SLOT_BYTES);
    slot[..n].copy_from_slice(&data[..n]);
    if data.first().is_some_and(|b| b & 1 == 1) {
        let body = crc32c::crc32c(&slot[HEADER_BYTES..]);
        slot[40..44].copy_from_slice(&body.to_le_bytes());
        let header = crc32c::crc32c(&slot[..44]);
        slot[44..48].copy_from_slice(&header.to_le_bytes());
    }
    let _ = decode(VolumeId(1), PgIndex(0), PageNo(5), &slot);
});
