//! Any bytes as a redo record, with the record CRC sealed over them first (random bytes
//! would almost never pass it, and everything behind it would go unexplored): it decodes
//! or is refused; a decoded record applies to a page without a panic.
#![no_main]

use bytes::Bytes;
use hexad_client::wire::codec::Reader;
use hexad_client::wire::{Record, RECORD_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= RECORD_HEADER_BYTES {
        let payload = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
        let end = (RECORD_HEADER_BYTES + payload).min(bytes.len());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[..44]),
            &bytes[RECORD_HEADER_BYTES..end],
        );
        bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    }
    let mut r = Reader::new(Bytes::from(bytes), "record");
    while let Ok(record) = Record::decode(&mut r) {
        assert_eq!(record.raw().len(), record.encoded_len());
        let mut page = [0u8; hexad_client::PAGE_BYTES];
        record.apply_to(&mut page);
    }
});
