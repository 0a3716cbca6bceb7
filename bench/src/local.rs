//! `--target local`: an embedded 6-node cluster (2 nodes in each of 3 AZs, one shard each)
//! on free loopback ports, with its data in a fresh directory that is removed when the run
//! ends. Each node is a child process running the same code as `hexad-node` (this binary
//! re-executed as `hexad-bench __node …`), so a fault plan can stop, continue, kill and
//! restart it with signals, as it would a real node.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hexad_client::placement::{ClusterMap, NodeEntry};

/// Nodes of the embedded cluster.
pub const NODES: u32 = 6;
const NODES_PER_AZ: u32 = 2;
/// Hot log per node: 16 × 16 MiB (released as the nodes store pages).
const HOT_LOG_FILE_BYTES: u64 = 16 << 20;
const HOT_LOG_FILES: u32 = 16;
/// Longest a node may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_mins(1);
/// The embedded cluster's node ids.
pub fn node_ids() -> Vec<u32> {
    (1..=NODES).collect()
}

/// The hidden first argument that makes this binary run a node.
pub const NODE_ARG: &str = "__node";

pub struct LocalCluster {
    pub dir: PathBuf,
    pub map: ClusterMap,
    file: PathBuf,
    /// The node processes, by node id − 1 (`None` while killed).
    pub nodes: Arc<Mutex<Vec<Option<Child>>>>,
}

impl LocalCluster {
    /// Starts the nodes under `root/hexad-local-<pid>`; `root` must be on a real disk.
    pub fn start(root: &Path) -> Result<LocalCluster> {
        let cluster = LocalCluster::prepare(root)?;
        for id in 1..=NODES {
            let child = cluster.spawn(id)?;
            cluster.nodes.lock().expect("not poisoned")[id as usize - 1] = Some(child);
        }
        Ok(cluster)
    }

    /// Writes the cluster file and makes the data directory without starting a node (start
    /// them with [`LocalCluster::handle`]'s `restart`).
    pub fn prepare(root: &Path) -> Result<LocalCluster> {
        LocalCluster::prepare_with(root, "")
    }

    /// [`LocalCluster::prepare`] with `defaults_toml` added to the cluster file's
    /// `[defaults]` (whole sections, e.g. `[defaults.repair]`).
    pub fn prepare_with(root: &Path, defaults_toml: &str) -> Result<LocalCluster> {
        let dir = root.join(format!("hexad-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!(
            "starting a local cluster: {NODES} node processes in 3 AZs under {} ({} MiB of hot log each)",
            dir.display(),
            (HOT_LOG_FILE_BYTES * u64::from(HOT_LOG_FILES)) >> 20
        );
        let mut text = format!(
            "[defaults]\nshards = 1\npin_shards = false\n[defaults.hot_log]\nfile_bytes = {HOT_LOG_FILE_BYTES}\nfile_count = {HOT_LOG_FILES}\n{defaults_toml}"
        );
        let mut entries = Vec::new();
        for id in 1..=NODES {
            let port = free_port()?;
            let az = format!("az{}", (id - 1) / NODES_PER_AZ + 1);
            let _ = write!(
                text,
                "[[node]]\nid = {id}\naz = \"{az}\"\naddr = \"127.0.0.1\"\nbase_port = {port}\nshards = 1\n"
            );
            entries.push(NodeEntry {
                id,
                az,
                addr: Ipv4Addr::LOCALHOST.into(),
                base_port: port,
                shards: Some(1),
            });
        }
        let file = dir.join("cluster.toml");
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        let map = ClusterMap::new(entries)?;
        Ok(LocalCluster {
            dir,
            map,
            file,
            nodes: Arc::new(Mutex::new((1..=NODES).map(|_| None).collect())),
        })
    }

    /// Node `id`'s data directory.
    pub fn node_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    /// Starts node `id` and waits for its ready line.
    fn spawn(&self, id: u32) -> Result<Child> {
        spawn_node(&self.file, &self.dir, id)
    }

    /// Where the bench reads these nodes' CPU time (their processes' `/proc/PID/stat`).
    pub fn cpu(&self) -> crate::cpu::NodeCpu {
        crate::cpu::NodeCpu::Children(self.nodes.clone())
    }

    /// What a fault plan needs to act on these nodes from another thread.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            file: self.file.clone(),
            dir: self.dir.clone(),
            nodes: self.nodes.clone(),
        }
    }
}

/// Acts on the nodes of a local cluster: signals and restarts.
#[derive(Clone)]
pub struct NodeHandle {
    file: PathBuf,
    dir: PathBuf,
    nodes: Arc<Mutex<Vec<Option<Child>>>>,
}

impl crate::fault::Nodes for NodeHandle {
    fn signal(&self, id: u32, signal: nix::sys::signal::Signal) -> Result<()> {
        let nodes = self.nodes.lock().expect("not poisoned");
        let Some(Some(child)) = nodes.get(id as usize - 1) else {
            bail!("node {id} is not running");
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, signal).with_context(|| format!("signalling node {id}"))
    }

    fn kill(&self, id: u32) -> Result<()> {
        let mut nodes = self.nodes.lock().expect("not poisoned");
        let Some(slot) = nodes.get_mut(id as usize - 1) else {
            bail!("no node {id}");
        };
        let Some(mut child) = slot.take() else {
            bail!("node {id} is not running");
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    fn restart(&self, id: u32) -> Result<()> {
        if self
            .nodes
            .lock()
            .expect("not poisoned")
            .get(id as usize - 1)
            .is_none_or(Option::is_some)
        {
            bail!("node {id} is running (kill it first)");
        }
        let child = spawn_node(&self.file, &self.dir, id)?;
        self.nodes.lock().expect("not poisoned")[id as usize - 1] = Some(child);
        Ok(())
    }
}

fn spawn_node(file: &Path, dir: &Path, id: u32) -> Result<Child> {
    let exe = std::env::current_exe().context("finding this program to start a node")?;
    let mut child = Command::new(exe)
        .arg(NODE_ARG)
        .arg("--cluster")
        .arg(file)
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--data-root")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting local node {id}"))?;
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(" ready: ") => return Ok(child),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow!(
                    "local node {id} did not become ready within {START_TIMEOUT:?} (its errors are above)"
                ));
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self
            .nodes
            .lock()
            .expect("not poisoned")
            .iter_mut()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
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
