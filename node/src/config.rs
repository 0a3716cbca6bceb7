//! Configuration: one node's TOML file, or a cluster file with one entry per node.
//!
//! ```toml
//! node_id = 1
//! az = "az1"
//! data_dir = "/var/lib/hexad/node1"
//! listen_addr = "127.0.0.1"
//! base_port = 7100          # shard i listens on base_port + i
//! # shards = 4              # default: the number of CPUs
//! # pin_shards = true       # pin shard i to CPU i
//! [hot_log]
//! file_bytes = 67108864     # 64 MiB per file, a multiple of 1 MiB
//! file_count = 16           # files per shard
//! sync = "dsync"            # O_DSYNC writes; or "fdatasync" (write, then fdatasync)
//! cache_bytes = 33554432    # newest log blocks kept in memory for reading records back
//! [group_commit]
//! max_block_bytes = 1048576
//! max_writes_in_flight = 2
//! max_queue_bytes = 16777216
//! [page_store]
//! cache_bytes = 33554432    # recently read or written page slots kept in memory (coalescer)
//! [repair]
//! rebuild_mb_per_s = 0      # a segment rebuild copies at most this fast (0: no limit)
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hotlog::format::{BLOCK_ALIGN, BLOCK_HEADER_BYTES, ENTRY_HEADER_BYTES};
use crate::hotlog::HotLogConfig;
use hexad_client::placement::NodeEntry;
use hexad_client::wire::message::MAX_SHARDS;
use hexad_client::wire::record::{MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Write, then `fdatasync`.
    Fdatasync,
    /// Files opened with `O_DSYNC`: a write is durable when it completes.
    Dsync,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotLogSection {
    #[serde(default = "defaults::file_bytes")]
    pub file_bytes: u64,
    #[serde(default = "defaults::file_count")]
    pub file_count: u32,
    #[serde(default = "defaults::sync")]
    pub sync: SyncMode,
    /// Newest hot-log blocks kept in memory per shard, so the coalescer and page reads
    /// take records from memory (0: every record is read back from the disk).
    #[serde(default = "defaults::cache_bytes")]
    pub cache_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCommitSection {
    #[serde(default = "defaults::max_block_bytes")]
    pub max_block_bytes: usize,
    #[serde(default = "defaults::max_writes_in_flight")]
    pub max_writes_in_flight: usize,
    #[serde(default = "defaults::max_queue_bytes")]
    pub max_queue_bytes: usize,
}

/// The page store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageStoreSection {
    /// Bytes of page-store slots kept in memory per shard as the file holds them, so the
    /// coalescer builds a page's next version without reading its slots back from the
    /// disk (`pagestore::cache`; `GetPage` always reads the disk). 0: none.
    #[serde(default = "defaults::page_cache_bytes")]
    pub cache_bytes: usize,
}

impl Default for PageStoreSection {
    fn default() -> Self {
        PageStoreSection {
            cache_bytes: defaults::page_cache_bytes(),
        }
    }
}

impl PageStoreSection {
    /// The cache's size in slots.
    pub fn cache_slots(&self) -> usize {
        self.cache_bytes / crate::pagestore::format::SLOT_BYTES
    }
}

/// Gossip and segment rebuild.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairSection {
    /// Megabytes (10^6 bytes) of pages per second a segment rebuild copies at most, so a
    /// rebuild leaves room for foreground work (`bench/RESULTS.md` has what it costs); 0,
    /// the default, copies as fast as the peer, the disk and the CPU allow.
    #[serde(default)]
    pub rebuild_mb_per_s: u64,
}

mod defaults {
    use super::SyncMode;
    pub fn file_bytes() -> u64 {
        64 << 20
    }
    pub fn file_count() -> u32 {
        16
    }
    /// One submission per block, durable when it completes: measured here (issue #8), it
    /// cost 0.7–0.8× the CPU per commit of a write and an `fdatasync` (which `io_uring`
    /// hands to a worker thread), with lower latency.
    pub fn sync() -> SyncMode {
        SyncMode::Dsync
    }
    pub fn cache_bytes() -> usize {
        32 << 20
    }
    /// 32 MiB: 2,730 slots of 12 KiB, both slots of 1,365 pages.
    pub fn page_cache_bytes() -> usize {
        32 << 20
    }
    pub fn max_block_bytes() -> usize {
        1 << 20
    }
    pub fn max_writes_in_flight() -> usize {
        2
    }
    pub fn max_queue_bytes() -> usize {
        16 << 20
    }
    pub fn pin_shards() -> bool {
        true
    }
    pub fn listen_addr() -> std::net::IpAddr {
        std::net::IpAddr::from([127, 0, 0, 1])
    }
}

impl Default for HotLogSection {
    fn default() -> Self {
        HotLogSection {
            file_bytes: defaults::file_bytes(),
            file_count: defaults::file_count(),
            sync: defaults::sync(),
            cache_bytes: defaults::cache_bytes(),
        }
    }
}

impl Default for GroupCommitSection {
    fn default() -> Self {
        GroupCommitSection {
            max_block_bytes: defaults::max_block_bytes(),
            max_writes_in_flight: defaults::max_writes_in_flight(),
            max_queue_bytes: defaults::max_queue_bytes(),
        }
    }
}

/// One node's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u32,
    pub az: String,
    pub data_dir: PathBuf,
    #[serde(default = "defaults::listen_addr")]
    pub listen_addr: IpAddr,
    pub base_port: u16,
    pub shards: Option<u16>,
    #[serde(default = "defaults::pin_shards")]
    pub pin_shards: bool,
    #[serde(default)]
    pub hot_log: HotLogSection,
    #[serde(default)]
    pub group_commit: GroupCommitSection,
    #[serde(default)]
    pub page_store: PageStoreSection,
    #[serde(default)]
    pub repair: RepairSection,
    /// Every node of the cluster, when the node runs from a cluster file: its segments
    /// gossip with their PG's other members. Empty for a node run from its own config
    /// (no peers known, no gossip).
    #[serde(skip)]
    pub peers: Vec<NodeEntry>,
}

/// Settings every node of a cluster file shares unless its entry overrides them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDefaults {
    pub shards: Option<u16>,
    #[serde(default)]
    pub pin_shards: Option<bool>,
    #[serde(default)]
    pub hot_log: HotLogSection,
    #[serde(default)]
    pub group_commit: GroupCommitSection,
    #[serde(default)]
    pub page_store: PageStoreSection,
    #[serde(default)]
    pub repair: RepairSection,
}

/// `config/cluster.toml`: the nodes of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub defaults: ClusterDefaults,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("bad config {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, path)
}

fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| {
            let line = text[..s.start].matches('\n').count() + 1;
            format!("line {line}: ")
        });
        ConfigError::Parse {
            path: path.to_owned(),
            detail: format!(
                "{}{}",
                at.unwrap_or_default(),
                e.message().replace('\n', " ")
            ),
        }
    })
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        NodeConfig::checked(read_toml(path)?, path)
    }

    /// A config from `text`, as [`NodeConfig::load`] reads it from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        NodeConfig::checked(parse_toml(text, path)?, path)
    }

    fn checked(cfg: NodeConfig, path: &Path) -> Result<NodeConfig, ConfigError> {
        cfg.validate().map_err(|detail| ConfigError::Invalid {
            path: path.to_owned(),
            detail,
        })?;
        Ok(cfg)
    }

    /// The shard count: configured, or one per CPU.
    pub fn shard_count(&self) -> u16 {
        self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS) as u16)
        })
    }

    pub fn shard_port(&self, shard: u16) -> u16 {
        self.base_port + shard
    }

    pub fn hot_log_config(&self) -> HotLogConfig {
        HotLogConfig {
            max_block_bytes: self.group_commit.max_block_bytes,
            max_writes_in_flight: self.group_commit.max_writes_in_flight,
            max_queue_bytes: self.group_commit.max_queue_bytes,
            cache_bytes: self.hot_log.cache_bytes,
        }
    }

    /// Checks every field against its limits; the error names the field and the limit.
    pub fn validate(&self) -> Result<(), String> {
        let shards = self.shard_count();
        if shards == 0 || usize::from(shards) > MAX_SHARDS {
            return Err(format!("shards = {shards}: must be 1..={MAX_SHARDS}"));
        }
        if self.base_port == 0 || u32::from(self.base_port) + u32::from(shards) > 65_536 {
            return Err(format!(
                "base_port = {} with {shards} shards does not fit in 1..=65535",
                self.base_port
            ));
        }
        let h = &self.hot_log;
        if h.file_bytes < 1 << 20 || !h.file_bytes.is_multiple_of(1 << 20) {
            return Err(format!(
                "hot_log.file_bytes = {}: must be a multiple of 1 MiB (1048576), at least 1 MiB",
                h.file_bytes
            ));
        }
        if h.file_count < 2 {
            return Err(format!(
                "hot_log.file_count = {}: must be at least 2",
                h.file_count
            ));
        }
        let g = &self.group_commit;
        let largest_entry = BLOCK_HEADER_BYTES
            + ENTRY_HEADER_BYTES
            + RECORD_HEADER_BYTES
            + MAX_RECORD_PAYLOAD_BYTES;
        if !g.max_block_bytes.is_multiple_of(BLOCK_ALIGN)
            || g.max_block_bytes < largest_entry
            || g.max_block_bytes as u64 > h.file_bytes
        {
            return Err(format!(
                "group_commit.max_block_bytes = {}: must be a multiple of {BLOCK_ALIGN}, at least {} (one full-page record) and at most hot_log.file_bytes",
                g.max_block_bytes,
                largest_entry.div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN
            ));
        }
        if !(1..=64).contains(&g.max_writes_in_flight) {
            return Err(format!(
                "group_commit.max_writes_in_flight = {}: must be 1..=64",
                g.max_writes_in_flight
            ));
        }
        if self.repair.rebuild_mb_per_s > 1_000_000 {
            return Err(format!(
                "repair.rebuild_mb_per_s = {}: at most 1000000 (0 for no limit)",
                self.repair.rebuild_mb_per_s
            ));
        }
        if g.max_queue_bytes < g.max_block_bytes {
            return Err(format!(
                "group_commit.max_queue_bytes = {}: must be at least max_block_bytes ({})",
                g.max_queue_bytes, g.max_block_bytes
            ));
        }
        Ok(())
    }
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        read_toml(path)
    }

    /// The configuration of node `id`, with its data under `data_root/node<id>`.
    pub fn node_config(
        &self,
        path: &Path,
        id: u32,
        data_root: &Path,
    ) -> Result<NodeConfig, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: path.to_owned(),
            detail,
        };
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| invalid(format!("no [[node]] with id = {id}")))?;
        let cfg = NodeConfig {
            node_id: node.id,
            az: node.az.clone(),
            data_dir: data_root.join(format!("node{id}")),
            listen_addr: node.addr,
            base_port: node.base_port,
            shards: node.shards.or(self.defaults.shards),
            pin_shards: self.defaults.pin_shards.unwrap_or(false),
            hot_log: self.defaults.hot_log.clone(),
            group_commit: self.defaults.group_commit.clone(),
            page_store: self.defaults.page_store.clone(),
            repair: self.defaults.repair.clone(),
            peers: self
                .nodes
                .iter()
                .map(|n| NodeEntry {
                    shards: n.shards.or(self.defaults.shards),
                    ..n.clone()
                })
                .collect(),
        };
        cfg.validate()
            .map_err(|d| invalid(format!("node {id}: {d}")))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, String> {
        let dir =
            std::env::temp_dir().join(format!("hexad-cfg-{}-{}", std::process::id(), text.len()));
        std::fs::write(&dir, text).unwrap();
        let r = NodeConfig::load(&dir).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn the_shipped_config_files_parse_with_every_section() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let node = NodeConfig::load(&root.join("node.toml")).unwrap();
        assert_eq!(node.page_store.cache_bytes, defaults::page_cache_bytes());
        let cluster = ClusterConfig::load(&root.join("cluster.toml")).unwrap();
        let first = cluster.nodes[0].id;
        let cfg = cluster
            .node_config(&root.join("cluster.toml"), first, Path::new("/var/tmp/x"))
            .unwrap();
        assert_eq!(
            cfg.page_store.cache_slots(),
            (32 << 20) / crate::pagestore::format::SLOT_BYTES
        );
        assert!(parse("node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = 7000\n[page_store]\ncache_bytes = 0\n")
            .unwrap()
            .page_store
            .cache_slots()
            == 0);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg =
            parse("node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = 7000\nshards = 2\n")
                .unwrap();
        assert_eq!(cfg.hot_log.file_count, 16);
        assert_eq!(cfg.group_commit.max_writes_in_flight, 2);
        assert_eq!(cfg.shard_port(1), 7001);
    }

    #[test]
    fn the_rebuild_rate_is_unlimited_unless_set_and_bounded() {
        let base = "node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = 7000\nshards = 1\n";
        assert_eq!(parse(base).unwrap().repair.rebuild_mb_per_s, 0);
        let set = format!("{base}[repair]\nrebuild_mb_per_s = 50\n");
        assert_eq!(parse(&set).unwrap().repair.rebuild_mb_per_s, 50);
        let e = parse(&format!("{base}[repair]\nrebuild_mb_per_s = 2000000\n")).unwrap_err();
        assert!(e.contains("repair.rebuild_mb_per_s"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = parse("node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = \"seven\"\n")
            .unwrap_err();
        assert!(e.contains("line 4") && !e.contains('\n'), "{e}");
        let e = parse("node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = 7000\nbogus = 1\n")
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("node_id = 1\naz = \"a\"\ndata_dir = \"/x\"\nbase_port = 7000\n[hot_log]\nfile_bytes = 1000\n").unwrap_err();
        assert!(e.contains("hot_log.file_bytes"), "{e}");
    }
}
