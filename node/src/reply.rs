//! What a shard sends back for a request: a message and whether the connection closes
//! after it, and the error replies several request handlers share.

use hexad_client::wire::message::MessageError;
use hexad_client::wire::{ErrorCode, Message};
use hexad_client::{Lsn, VolumeEpoch};

use crate::hotlog::format::SegmentKey;

/// What to send back, and whether to close the connection afterwards.
#[derive(Debug)]
pub struct Reply {
    pub message: Message,
    pub close: bool,
    /// Fault injection (tests): flip the last byte of the body before framing, so that only
    /// the end-to-end CRC inside the message (a record's, a baseline page's) can catch it.
    pub corrupt: bool,
}

impl Reply {
    pub(crate) fn ok(message: Message) -> Reply {
        Reply {
            message,
            close: false,
            corrupt: false,
        }
    }

    pub fn error(code: ErrorCode, detail: u32, message: String) -> Reply {
        Reply {
            message: Message::Error {
                code,
                detail,
                message,
            },
            close: code.closes_connection(),
            corrupt: false,
        }
    }
}

/// Replies to a frame that did not decode.
pub fn decode_error_reply(e: &MessageError) -> Reply {
    Reply::error(e.code(), 0, e.to_string())
}

pub(crate) fn stale_epoch(key: SegmentKey, asked: VolumeEpoch, held: VolumeEpoch) -> Reply {
    Reply::error(
        ErrorCode::StaleEpoch,
        saturate(held),
        format!(
            "volume {} pg {}: request volume epoch {asked} is older than the segment's {held}",
            key.volume, key.pg
        ),
    )
}

pub(crate) fn saturate(epoch: VolumeEpoch) -> u32 {
    u32::try_from(epoch.0).unwrap_or(u32::MAX)
}

/// Records at or below a segment's floor live only in its page versions.
pub(crate) fn below_floor(key: SegmentKey, after: Lsn, floor: Lsn) -> Reply {
    Reply::error(
        ErrorCode::TooOld,
        0,
        format!(
            "volume {} pg {}: records up to LSN {floor} are coalesced into pages and gone from the log; asked for records after {after}",
            key.volume, key.pg
        ),
    )
}

pub(crate) fn no_such_segment(key: SegmentKey) -> Reply {
    Reply::error(
        ErrorCode::NoSuchSegment,
        0,
        format!("volume {} pg {}: no segment here", key.volume, key.pg),
    )
}
