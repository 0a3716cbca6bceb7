//! The `hexad-node` command.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::{NodeId, ShardId};

use crate::config::{ClusterConfig, NodeConfig, SyncMode};
use crate::disk::glommio_disk::GlommioDisk;
use crate::preflight;
use crate::server::Faults;
use crate::shard::{Shard, ShardIdentity};

#[derive(Debug, Parser)]
#[command(
    name = "hexad-node",
    about = "hexad storage node",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The node's TOML configuration.
    #[arg(long, conflicts_with = "cluster")]
    config: Option<PathBuf>,
    /// A cluster file; with --node-id and --data-root, run that node of it.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Which node of the cluster file to run.
    #[arg(long)]
    node_id: Option<u32>,
    /// With --cluster: data goes to `DATA_ROOT/node`<ID>, created if missing.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// With --cluster: print the node ids of the cluster file, one per line, and exit.
    #[arg(long)]
    list_nodes: bool,
    /// Check the configuration and the environment, then exit.
    #[arg(long)]
    check: bool,
    /// Fault injection: delay every reply by this many microseconds (emulates a slow
    /// network link for tests and benchmarks; never set it in production).
    #[arg(long, default_value_t = 0)]
    fault_reply_delay_us: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Operator commands against a running cluster (membership changes).
    Admin {
        #[command(subcommand)]
        action: crate::admin::AdminCommand,
    },
}

/// Runs the node; returns the process exit code. Errors print as one line.
pub fn main() -> i32 {
    main_from(std::env::args())
}

/// Like [`main`], with the command line given (its first item is the program name). Lets
/// another program run a node in a process of its own (hexad-bench's local cluster).
pub fn main_from(command_line: impl IntoIterator<Item = String>) -> i32 {
    let args = match Args::try_parse_from(command_line) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if let Some(Command::Admin { action }) = &args.command {
        return match crate::admin::run(action) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("hexad-node admin: error: {e}");
                1
            }
        };
    }
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hexad-node: error: {e}");
            1
        }
    }
}

fn load(args: &Args) -> Result<Option<NodeConfig>, String> {
    if let Some(path) = &args.cluster {
        let cluster = ClusterConfig::load(path).map_err(|e| e.to_string())?;
        if args.list_nodes {
            for n in &cluster.nodes {
                println!("{}", n.id);
            }
            return Ok(None);
        }
        let id = args.node_id.ok_or("--cluster needs --node-id")?;
        let root = args
            .data_root
            .as_ref()
            .ok_or("--cluster needs --data-root")?;
        let cfg = cluster
            .node_config(path, id, root)
            .map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            format!(
                "cannot create data directory {}: {e}",
                cfg.data_dir.display()
            )
        })?;
        return Ok(Some(cfg));
    }
    let path = args
        .config
        .as_ref()
        .ok_or("give --config FILE (or --cluster FILE --node-id N --data-root DIR)")?;
    NodeConfig::load(path).map(Some).map_err(|e| e.to_string())
}

fn run(args: &Args) -> Result<(), String> {
    let Some(cfg) = load(args)? else {
        return Ok(());
    };
    if args.check {
        for warning in preflight::check(&cfg)? {
            println!("hexad-node {}: WARNING: {warning}", cfg.node_id);
        }
        println!(
            "hexad-node {}: configuration and environment OK",
            cfg.node_id
        );
        return Ok(());
    }
    let faults = Faults {
        reply_delay: std::time::Duration::from_micros(args.fault_reply_delay_us),
    };
    if !faults.reply_delay.is_zero() {
        eprintln!(
            "hexad-node: FAULT INJECTION: every reply is delayed by {:?}",
            faults.reply_delay
        );
    }
    let node = start(&cfg, faults)?;
    for line in &node.startup {
        println!("{line}");
    }
    node.wait()
}

/// A node whose shards are running on their own executor threads.
pub struct RunningNode {
    /// Warnings from the preflight checks, one line per shard (what it recovered and where
    /// it listens), then the ready line.
    pub startup: Vec<String>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    errors: mpsc::Receiver<Result<String, String>>,
}

impl RunningNode {
    /// Blocks until a shard stops, which happens only when it fails; returns its error.
    pub fn wait(self) -> Result<(), String> {
        for h in self.handles {
            let _ = h.join();
        }
        match self.errors.recv() {
            Ok(Err(e)) => Err(e),
            _ => Err("a shard stopped".into()),
        }
    }
}

/// Starts every shard of a node (after the preflight checks) and returns once all of them
/// serve. Used by the `hexad-node` command and by hexad-bench's embedded local cluster.
pub fn start(cfg: &NodeConfig, faults: Faults) -> Result<RunningNode, String> {
    let warnings = preflight::check(cfg)?;
    let shards = cfg.shard_count();
    let ports: Vec<u16> = (0..shards).map(|s| cfg.shard_port(s)).collect();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cfg.pin_shards && usize::from(shards) > cpus {
        return Err(format!(
            "pin_shards = true needs a CPU per shard: {shards} shards, {cpus} CPUs (set shards or pin_shards = false)"
        ));
    }
    let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
    let mut handles = Vec::new();
    for shard in 0..shards {
        let cfg = cfg.clone();
        let ports = ports.clone();
        let ready = ready_tx.clone();
        let placement = if cfg.pin_shards {
            Placement::Fixed(usize::from(shard))
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("n{}-shard-{shard}", cfg.node_id))
            .spawn(move || async move {
                if let Err(e) = run_shard(cfg, shard, ports, faults, &ready).await {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start executor for shard {shard}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut startup: Vec<String> = warnings
        .iter()
        .map(|w| format!("hexad-node {}: WARNING: {w}", cfg.node_id))
        .collect();
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(line)) => startup.push(line),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard exited during startup".into()),
        }
    }
    startup.push(format!(
        "hexad-node {} ready: {shards} shards on {}:{}..{}",
        cfg.node_id,
        cfg.listen_addr,
        ports[0],
        ports[ports.len() - 1]
    ));
    Ok(RunningNode {
        startup,
        handles,
        errors: ready_rx,
    })
}

/// The coalescer's share of a shard's CPU against the default queue's 1000, when both
/// have work.
const BACKGROUND_SHARES: usize = 100;

async fn run_shard(
    cfg: NodeConfig,
    shard: u16,
    ports: Vec<u16>,
    faults: Faults,
    ready: &mpsc::Sender<Result<String, String>>,
) -> Result<(), String> {
    let started = Instant::now();
    let dir = cfg.data_dir.join(format!("shard-{shard}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let disk = GlommioDisk::open(
        &dir,
        "hotlog",
        cfg.hot_log.file_count,
        cfg.hot_log.file_bytes,
        cfg.hot_log.sync == SyncMode::Dsync,
    )
    .await
    .map_err(|e| format!("shard {shard}: cannot open hot log: {e}"))?;
    let identity = ShardIdentity {
        node_id: NodeId(cfg.node_id),
        shard: ShardId(shard),
        shard_ports: ports.clone(),
    };
    let meta = crate::meta::MetaStore::load(&dir).map_err(|e| format!("shard {shard}: {e}"))?;
    let pages = crate::pagestore::PageStore::open(&dir.join("pages"), cfg.page_store.cache_slots())
        .map_err(|e| format!("shard {shard}: cannot open the page store: {e}"))?;
    let (shard_state, report) = Shard::open(
        identity,
        disk,
        cfg.hot_log_config(),
        meta,
        Some(pages),
        Rc::new(crate::clock::SystemClock),
    )
    .await
    .map_err(|e| format!("shard {shard}: recovery failed: {e}"))?;
    for c in &report.corruption {
        eprintln!(
            "hexad-node: CORRUPTION in shard {shard} hot log: blocks {}..={} were durable and are unreadable \
             (after file {:?} offset {}); their records are missing from this node until repaired from peers",
            c.first_seq, c.last_seq, c.after_file, c.after_offset
        );
    }
    let addr = std::net::SocketAddr::new(cfg.listen_addr, ports[usize::from(shard)]);
    let listener = glommio::net::TcpListener::bind(addr)
        .map_err(|e| format!("shard {shard}: cannot listen on {addr}: {e}"))?;
    shard_state
        .rebuild_bytes_per_s
        .set(cfg.repair.rebuild_mb_per_s * 1_000_000);
    glommio::spawn_local(shard_state.log().clone().run_writer()).detach();
    // Coalescing yields to requests: a small share, and latency does not matter.
    let background = glommio::executor().create_task_queue(
        glommio::Shares::Static(BACKGROUND_SHARES),
        glommio::Latency::NotImportant,
        "coalesce",
    );
    if let Some(path) = std::env::var_os("HEXAD_FAULT_CORRUPT_REPAIR") {
        eprintln!(
            "hexad-node: shard {shard}: FAULT INJECTION (tests): once {} exists, as many repair replies as it says leave with one byte flipped",
            std::path::Path::new(&path).display()
        );
        *shard_state.fault_arm_file.borrow_mut() = Some(path.into());
    }
    glommio::spawn_local_into(shard_state.clone().run_coalescer(), background)
        .map_err(|e| format!("shard {shard}: cannot start the coalescer: {e}"))?
        .detach();
    if !cfg.peers.is_empty() {
        let cluster = hexad_client::placement::ClusterMap::new(cfg.peers.clone())
            .map_err(|e| format!("shard {shard}: the cluster's nodes: {e}"))?;
        glommio::spawn_local_into(shard_state.clone().run_gossip(cluster), background)
            .map_err(|e| format!("shard {shard}: cannot start gossip: {e}"))?
            .detach();
    }
    let _ = ready.send(Ok(format!(
        "shard {shard}: recovered {} records in {} segments from {} log blocks in {} ms; listening on {addr}",
        report.records,
        report.segments,
        report.blocks,
        started.elapsed().as_millis()
    )));
    crate::server::serve(shard_state, listener, faults).await;
    Ok(())
}
