//! Any bytes as a receive buffer: frames come off it, or a clear error; each body that
//! passes its CRC decodes to a message or to an error, never a panic. With the first byte
//! odd, the rest has each frame's header and body CRCs sealed over it first (random bytes
//! would almost never pass them, and everything behind them would go unexplored).
#![no_main]

use bytes::BytesMut;
use hexad_client::wire::frame::take_frame;
use hexad_client::wire::{Message, FRAME_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fn seal(buf: &mut [u8]) {
    let mut at = 0;
    while buf.len() - at >= FRAME_HEADER_BYTES {
        let h = at;
        let len = u32::from_le_bytes(buf[h + 16..h + 20].try_into().unwrap()) as usize;
        let len = len.min(buf.len() - h - FRAME_HEADER_BYTES);
        buf[h + 16..h + 20].copy_from_slice(&(len as u32).to_le_bytes());
        let body = crc32c::crc32c(&buf[h + FRAME_HEADER_BYTES..h + FRAME_HEADER_BYTES + len]);
        buf[h + 20..h + 24].copy_from_slice(&body.to_le_bytes());
        let header = crc32c::crc32c(&buf[h..h + 28]);
        buf[h + 28..h + 32].copy_from_slice(&header.to_le_bytes());
        at = h + FRAME_HEADER_BYTES + len;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((flag, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    if flag & 1 == 1 {
        seal(&mut buf);
    }
    while let Ok(Some((header, body))) = take_frame(&mut buf) {
        let _ = Message::decode(header.kind, body);
    }
});
