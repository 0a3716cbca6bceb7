//! Any bytes as a shard's `segments.meta`, with its CRC sealed over them (see `record.rs`):
//! it loads or is refused as corrupt; a store that loads saves back to a file that loads
//! to the same store.
#![no_main]

use std::rc::Rc;

use hexad_node::meta::{MemMedia, MetaStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if let Some(body) = bytes.len().checked_sub(4) {
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    let media = Rc::new(MemMedia::holding(bytes));
    if let Ok(mut store) = MetaStore::open(media.clone()) {
        store.save().expect("an in-memory save succeeds");
        let again = MetaStore::open(media).expect("a saved store loads");
        assert_eq!(again.segments, store.segments);
        assert_eq!(again.volumes, store.volumes);
    }
});
