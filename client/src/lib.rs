//! hexad-client: the library a database engine links to talk to hexad storage nodes.
//!
//! - [`types`]: newtypes for identities and units (`Lsn`, `VolumeId`, `PgIndex`, ...).
//! - [`wire`]: the frame and message format shared with the node (see `FORMAT.md`).
//! - [`placement`]: which 6 nodes hold a PG (2 per AZ in 3 AZs) and which shard owns a segment.
//! - [`membership`]: a PG's member sets and their changes (replacing a node in two epochs).
//! - [`quorum`]: the writer's sans-IO quorum arithmetic: PGCL, VCL, VDL, LAL, retained bytes.
//! - [`volume`]: the writer's `Volume` on glommio: open with recovery and fencing, fan-out
//!   to 6 segments per PG, boxcar sending, reconnect and resend, `append` /
//!   `wait_durable`; and the read-only `VolumeReader`.
//! - [`blocking`]: a small synchronous connection over any [`wire::transport::FrameTransport`],
//!   used by tests, the bench and admin tools.

pub mod blocking;
pub mod membership;
pub mod net;
pub mod placement;
pub mod quorum;
pub mod sync;
pub mod types;
pub mod volume;
pub mod wire;

pub use types::*;
