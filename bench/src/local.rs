//! `--target local`: an embedded 6-node cluster (2 nodes in each of 3 AZs, one shard each)
//! started inside this process on free loopback ports, with its data in a fresh directory
//! that is removed when the run ends. Each node is the same code as `hexad-node`
//! (`hexad_node::cli::start`), its shards on their own glommio executors.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use hexad_client::placement::{ClusterMap, NodeEntry};
use hexad_node::cli::RunningNode;
use hexad_node::config::{GroupCommitSection, HotLogSection, NodeConfig, SyncMode};
use hexad_node::server::Faults;

const NODES: u32 = 6;
const NODES_PER_AZ: u32 = 2;
/// Hot log per node: 16 × 16 MiB. Nothing releases it before the page store (issue #4).
const HOT_LOG_FILE_BYTES: u64 = 16 << 20;
const HOT_LOG_FILES: u32 = 16;

pub struct LocalCluster {
    pub dir: PathBuf,
    pub map: ClusterMap,
    _nodes: Vec<RunningNode>,
}

impl LocalCluster {
    /// Starts the nodes under `root/hexad-local-<pid>`; `root` must be on a real disk.
    pub fn start(root: &Path) -> Result<LocalCluster> {
        let dir = root.join(format!("hexad-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!(
            "starting a local cluster: {NODES} nodes in 3 AZs under {} ({} MiB of hot log each)",
            dir.display(),
            (HOT_LOG_FILE_BYTES * u64::from(HOT_LOG_FILES)) >> 20
        );
        let mut entries = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let data_dir = dir.join(format!("node{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let cfg = NodeConfig {
                node_id: id,
                az: format!("az{}", (id - 1) / NODES_PER_AZ + 1),
                data_dir,
                listen_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                base_port: free_port()?,
                shards: Some(1),
                pin_shards: false,
                hot_log: HotLogSection {
                    file_bytes: HOT_LOG_FILE_BYTES,
                    file_count: HOT_LOG_FILES,
                    sync: SyncMode::Fdatasync,
                },
                group_commit: GroupCommitSection::default(),
            };
            cfg.validate()
                .map_err(|e| anyhow!("local node {id}: {e}"))?;
            let node = hexad_node::cli::start(&cfg, Faults::default())
                .map_err(|e| anyhow!("local node {id}: {e}"))?;
            entries.push(NodeEntry {
                id,
                az: cfg.az.clone(),
                addr: cfg.listen_addr,
                base_port: cfg.base_port,
                shards: Some(1),
            });
            nodes.push(node);
        }
        let map = ClusterMap::new(entries)?;
        Ok(LocalCluster {
            dir,
            map,
            _nodes: nodes,
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // The node threads end with the process; their files are unlinked now.
        if std::fs::remove_dir_all(&self.dir).is_ok() {
            eprintln!("removed the local cluster's data ({})", self.dir.display());
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The nodes of a quorum target: `local` (an embedded cluster, kept alive by the returned
/// handle) or `cluster:FILE`; with the shards per node where the file does not say.
pub fn quorum_target(
    target: &str,
    local_dir: &Path,
    command: &str,
) -> Result<(Option<LocalCluster>, ClusterMap, u16)> {
    if target == "local" {
        let c = LocalCluster::start(local_dir)?;
        let map = c.map.clone();
        return Ok((Some(c), map, 1));
    }
    if let Some(path) = target.strip_prefix("cluster:") {
        let (map, shards) = crate::quorum::load_cluster(Path::new(path))?;
        return Ok((None, map, shards));
    }
    Err(anyhow!(
        "--target must be local or cluster:FILE for {command}"
    ))
}
