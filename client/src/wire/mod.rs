//! The hexad wire format: length-prefixed, versioned, CRC32C-checked frames carrying one
//! message each. Every byte is described in `FORMAT.md` at the repository root.
//!
//! Layers, bottom up:
//! - [`frame`]: the fixed 32-byte header, parsed in place from a receive buffer.
//! - [`record`]: one redo record, encoded the same way on the wire and in the node's hot log,
//!   so a node copies record bytes from the socket buffer into its DMA buffer without
//!   re-encoding them.
//! - [`message`]: the one message enum of the storage protocol.
//! - [`recv`]: reading a socket into a receive buffer without zero-filling per read.
//! - [`transport`]: the small trait another network stack would implement instead of TCP.

pub mod codec;
pub mod frame;
pub mod message;
pub mod record;
pub mod recv;
pub mod transport;

pub use frame::{FrameError, FrameHeader, FRAME_HEADER_BYTES, MAX_FRAME_BODY_BYTES};
pub use message::{
    BaselinePage, ErrorCode, FenceMode, IndexEntry, Message, NodeStats, RebuildPhase, SegmentStat,
    SegmentView, Truncation, BASELINE_DONE, MAX_BASELINE_PAGES,
};
pub use record::{Op, PageLink, Record, RecordError, RECORD_HEADER_BYTES};

/// Protocol version spoken by this build. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
