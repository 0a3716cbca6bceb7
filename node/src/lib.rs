//! hexad-node: a thread-per-core storage node.
//!
//! - [`config`]: the node's TOML configuration and the cluster file.
//! - [`preflight`]: checks that turn a bad environment into one clear line.
//! - [`disk`]: the positional `Disk` trait; glommio (`O_DIRECT`, `io_uring`) and simulated disks.
//! - [`hotlog`]: the per-shard redo log: block format, group commit, recovery scan.
//! - [`segment`]: one PG replica's records, SCL and epochs.
//! - [`meta`]: the per-shard file of segment epochs and truncation ranges; `fencing.rs`
//!   answers `Fence` and `Truncate` with it.
//! - [`pagestore`]: page versions in two out-of-place slots per page; `pages.rs` serves
//!   `GetPage`, runs the coalescer, moves floors and applies back-pressure.
//! - [`readers`]: the volume's reader slots (the limit on read-only attachments).
//! - [`shard`]: a shard's segments and the handling of one request; `gossip.rs` fills a
//!   segment's holes from its PG's other members.
//! - [`server`]: the glommio TCP shell: accept, read frames, write replies.
//! - [`cli`]: the `hexad-node` command; [`admin`]: its operator commands (replacing a node).

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disk;
mod fencing;
mod gossip;
pub mod hotlog;
mod membership;
pub mod meta;
mod pages;
pub mod pagestore;
pub mod preflight;
pub mod readers;
mod rebuild;
pub mod reply;
pub mod segment;
pub mod server;
pub mod shard;
pub mod usage;
