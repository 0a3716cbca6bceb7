//! Any kind and body as a message (past the frame CRC, which random bytes rarely pass): a
//! message that decodes re-encodes to a body that decodes to the same message. (Not to the
//! same bytes: an older, shorter form of a message still decodes, with defaults.)
#![no_main]

use bytes::Bytes;
use hexad_client::wire::{Message, FRAME_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let kind = u16::from_le_bytes(*kind);
    if let Ok(msg) = Message::decode(kind, Bytes::copy_from_slice(body)) {
        let frame = msg.to_frame(1);
        let again = Message::decode(kind, frame.slice(FRAME_HEADER_BYTES..))
            .unwrap_or_else(|e| panic!("kind {kind}: {msg:?} re-encodes to a body that fails: {e}"));
        assert_eq!(again, msg, "kind {kind}: the re-encoded message differs");
    }
});
