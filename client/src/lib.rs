//! hexad-client: the library a database engine links to talk to hexad storage nodes.
//!
//! - [`types`]: newtypes for identities and units (`Lsn`, `VolumeId`, `PgIndex`, ...).
//! - [`wire`]: the frame and message format shared with the node (see `FORMAT.md`).
//! - [`placement`]: which shard of a node owns a segment.
//! - [`blocking`]: a small synchronous connection over any [`wire::transport::FrameTransport`],
//!   used by tests, the bench and admin tools. The quorum client arrives with issue #3.

pub mod blocking;
pub mod placement;
pub mod types;
pub mod wire;

pub use types::*;
