//! Any bytes as a hot-log block, with the block CRC sealed over them (see `record.rs`): it
//! parses or is skipped, and a parsed block's entries lie inside its used bytes.
#![no_main]

use hexad_node::hotlog::format::{parse_block, BLOCK_HEADER_BYTES, ENTRY_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if buf.len() >= BLOCK_HEADER_BYTES {
        let used = u32::from_le_bytes(buf[56..60].try_into().unwrap()) as usize;
        let end = used.clamp(BLOCK_HEADER_BYTES, buf.len());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..60]), &buf[BLOCK_HEADER_BYTES..end]);
        buf[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    if let Some((header, entries)) = parse_block(&buf) {
        for e in &entries {
            assert!(e.record_offset >= BLOCK_HEADER_BYTES + ENTRY_HEADER_BYTES);
            assert!(e.record_offset + e.record.encoded_len() <= header.used_bytes as usize);
        }
    }
});
