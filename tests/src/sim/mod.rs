//! A whole cluster in one thread, seeded (issue #11; `hexad-sim` runs it): six nodes
//! (the real `Shard` on a simulated disk, page store and `segments.meta`, served by the
//! real connection loop, `hexad_node::server::handle_connection`) on an in-memory network
//! ([`hexad_client::net::Connector`]), with the real writer (`Volume`) committing through
//! it while the seed resets connections and cuts nodes' power. Then every node comes
//! back, a new writer opens the volume (recovery and fencing), and the checker asks:
//! - every acknowledged commit is in its page, applied exactly once (each commit adds its
//!   own bit to the page's counter, so a record applied twice or lost shows);
//! - no bit appears that no commit set (a record that was never written);
//! - each page's bytes are those of its newest applied commit;
//! - the writer's VDL never moved backwards;
//! - the old writer is fenced: it can no longer commit, on a PG it wrote or a new one;
//! - every commit was acknowledged: at most two nodes are down at once, so a write quorum
//!   is always within reach (liveness, within the failure model).
//!
//! Not yet deterministic byte for byte: the writer's and the nodes' timers (request
//! timeouts, reconnect backoff, the coalescer's pauses) run on real time, so a seed fixes
//! the faults and the workload but not every interleaving. Gossip and rebuilds run over the
//! same network. See bench/RESULTS.md, issue #11.
//!
//! [`run`] runs one seed of one [`Plan`]; `tests/cluster_sim.rs` runs a few of each, and
//! `hexad-sim` many (`--seeds N`, `--hours H`, `--seed S` for one with its trace).

mod faults;
mod load;
mod net;

use faults::{faults, Cut, DiskFault};
use load::{changes, check_page, page_no, workload, Reference, SecondOpen};
use net::{reset_link, End, Pipe, PipeRef};

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hexad_client::net::{BoxConn, Connector, Network};
use hexad_client::placement::{ClusterMap, NodeEntry};
use hexad_client::volume::{Volume, VolumeConfig};
use hexad_client::{NodeId, PageNo, ShardId, VolumeId, PAGE_BYTES, PG_PAGES};
use hexad_node::clock::SystemClock;
use hexad_node::disk::sim::{Rng, SimDisk};
use hexad_node::hotlog::HotLogConfig;
use hexad_node::meta::{MemMedia, MetaStore};
use hexad_node::pagestore::PageStore;
use hexad_node::server::{handle_connection, Faults};
use hexad_node::shard::{Shard, ShardIdentity};

const NODES: u32 = 6;
const VOLUME: VolumeId = VolumeId(3);
/// Pages per PG the commits touch, over two PGs.
const PAGES_PER_PG: u64 = 8;
/// Commits per page at most: each sets its own bit of the page's counter.
const COMMITS_PER_PAGE: u64 = 48;
const IN_FLIGHT: usize = 8;
/// Small logs, so that runs also fill, coalesce and recycle them.
const LOG: HotLogConfig = HotLogConfig {
    max_block_bytes: 64 * 1024,
    max_writes_in_flight: 2,
    max_queue_bytes: 256 * 1024,
    cache_bytes: 256 * 1024,
};
const LOG_FILES: u32 = 8;
const LOG_FILE_BYTES: u64 = 1 << 20;
/// One seed's whole run, faults and checks, must end within this.
pub const SEED_DEADLINE: Duration = Duration::from_mins(1);

// ---------------------------------------------------------------------------------------
// The nodes.

/// One node: its shard while it runs, and its media across power cuts.
struct SimNode {
    media: Rc<MemMedia>,
    shard: Option<Rc<Shard<SimDisk>>>,
    /// The hot-log writer and the coalescer; dropped (cancelled) at a power cut.
    tasks: Vec<glommio::Task<()>>,
    /// Links to this node, to reset when it goes down.
    links: Vec<(PipeRef, PipeRef)>,
    power_cuts: u32,
}

struct SimNet {
    nodes: RefCell<BTreeMap<u32, SimNode>>,
    /// One-way latency of every link to a node (none: instant).
    latency: RefCell<BTreeMap<u32, Duration>>,
    /// The first writer, for the report of a seed that gets stuck.
    writer: RefCell<Option<Rc<Volume>>>,
    /// Directions a partition cuts, `(from, to)` by host (0: the writers).
    cuts: RefCell<BTreeSet<(u32, u32)>>,
    trace: RefCell<Vec<String>>,
    started: Instant,
}

thread_local! {
    /// The simulation of this thread (the connector finds it here: a `Connector` must be
    /// `Send`, the simulation is not).
    static NET: RefCell<Option<Rc<SimNet>>> = const { RefCell::new(None) };
}

fn addr_of(id: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 40_000 + id as u16)
}

fn node_of(addr: SocketAddr) -> Option<u32> {
    (u32::from(addr.port())).checked_sub(40_000)
}

impl SimNet {
    fn note(&self, line: &str) {
        let at = self.started.elapsed().as_millis();
        self.trace.borrow_mut().push(format!("{at:>6} ms  {line}"));
    }

    async fn start_node(&self, id: u32, disk: SimDisk, pages: PageStore) -> Result<(), String> {
        let media = self.nodes.borrow()[&id].media.clone();
        let meta = MetaStore::open(media).map_err(|e| format!("node {id}: metadata: {e}"))?;
        let identity = ShardIdentity {
            node_id: NodeId(id),
            shard: ShardId(0),
            shard_ports: vec![addr_of(id).port()],
        };
        let (shard, report) =
            Shard::open(identity, disk, LOG, meta, Some(pages), Rc::new(SystemClock))
                .await
                .map_err(|e| format!("node {id} does not reopen: {e}"))?;
        shard.set_network(Network::Custom(Arc::new(SimConnector { from: id })));
        let tasks = vec![
            glommio::spawn_local(shard.log().clone().run_writer()),
            glommio::spawn_local(shard.clone().run_coalescer()),
            glommio::spawn_local(shard.clone().run_gossip(cluster_map())),
        ];
        let mut nodes = self.nodes.borrow_mut();
        let node = nodes.get_mut(&id).expect("a node");
        node.shard = Some(shard);
        node.tasks = tasks;
        drop(nodes);
        let corruption = if report.corruption.is_empty() {
            String::new()
        } else {
            format!("; hot-log corruption: {:?}", report.corruption)
        };
        self.note(&format!(
            "node {id} up ({} records recovered, {} blocks{corruption})",
            report.records, report.blocks
        ));
        Ok(())
    }

    /// A power cut: the node's links break, its tasks stop, and its disk and page store
    /// come back as a crash leaves them (unsynced writes lost, kept or torn).
    fn cut_power(&self, id: u32) -> Option<(SimDisk, PageStore)> {
        let mut nodes = self.nodes.borrow_mut();
        let node = nodes.get_mut(&id)?;
        let shard = node.shard.take()?;
        for (a, b) in node.links.drain(..) {
            reset_link(&a, &b);
        }
        node.tasks.clear();
        node.power_cuts += 1;
        let disk = shard.log().disk().crash();
        let pages = shard.page_store().expect("simulated pages").crash();
        drop(nodes);
        self.note(&format!("node {id}: power cut"));
        Some((disk, pages))
    }

    /// Makes node `id`'s next sync or metadata save fail.
    fn disk_fault(&self, id: u32, what: DiskFault) {
        let nodes = self.nodes.borrow();
        let node = &nodes[&id];
        let Some(shard) = node.shard.as_ref() else {
            return;
        };
        match what {
            DiskFault::LogSync => shard.log().disk().fail_next_syncs(1),
            DiskFault::PageSync => shard
                .page_store()
                .expect("simulated pages")
                .fail_next_syncs(1),
            DiskFault::LogRot(pick) => {
                let at = shard.log().disk().rot_written_sector(pick);
                drop(nodes);
                self.note(&format!(
                    "node {id}: bit rot in its hot log at (file, offset) {at:?}"
                ));
                return;
            }
            DiskFault::MetaSave { full } => {
                let kind = if full {
                    io::ErrorKind::StorageFull
                } else {
                    io::ErrorKind::Other
                };
                node.media.fail_next(1, kind);
            }
        }
        drop(nodes);
        self.note(&format!("node {id}: the next {what:?} fails"));
    }

    /// An operator restarts node `id` (a power cycle: what it had not synced may be lost).
    async fn restart(&self, id: u32) -> Result<(), String> {
        if let Some((disk, pages)) = self.cut_power(id) {
            self.start_node(id, disk, pages).await?;
        }
        Ok(())
    }

    fn reset_one_link(&self, id: u32, which: u64) {
        let mut nodes = self.nodes.borrow_mut();
        let node = nodes.get_mut(&id).expect("a node");
        node.links
            .retain(|(a, _)| !a.borrow().reset && !a.borrow().closed);
        if node.links.is_empty() {
            return;
        }
        let i = (which % node.links.len() as u64) as usize;
        let (a, b) = node.links.remove(i);
        reset_link(&a, &b);
        drop(nodes);
        self.note(&format!("node {id}: a connection reset"));
    }

    fn is_up(&self, id: u32) -> bool {
        self.nodes
            .borrow()
            .get(&id)
            .is_some_and(|n| n.shard.is_some())
    }

    /// Cuts `nodes` off every other host as `how` says; what the cut directions carry is
    /// held until [`SimNet::heal`].
    fn partition(&self, nodes: &[u32], how: Cut) {
        let inside = |h: u32| nodes.contains(&h);
        let mut cuts = self.cuts.borrow_mut();
        for a in 0..=NODES {
            for b in 0..=NODES {
                let cut = match how {
                    Cut::Both => inside(a) != inside(b),
                    Cut::Outgoing => inside(a) && !inside(b),
                    Cut::Incoming => !inside(a) && inside(b),
                };
                if cut {
                    cuts.insert((a, b));
                }
            }
        }
        for pipe in self.pipes() {
            let mut p = pipe.borrow_mut();
            let cut = cuts.contains(&(p.from, p.to));
            p.set_cut(cut);
        }
        drop(cuts);
        self.note(&format!("partition: nodes {nodes:?} cut off ({how:?})"));
    }

    /// Ends every partition: held bytes arrive.
    fn heal(&self) {
        self.cuts.borrow_mut().clear();
        for pipe in self.pipes() {
            pipe.borrow_mut().set_cut(false);
            net::wake(&pipe);
        }
        self.note("partition healed");
    }

    /// Every direction of every open link.
    fn pipes(&self) -> Vec<PipeRef> {
        let nodes = self.nodes.borrow();
        nodes
            .values()
            .flat_map(|n| n.links.iter())
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// Host `from` connects to `addr`. A partition between them loses the handshake: the
    /// connect times out.
    fn connect(&self, from: u32, addr: SocketAddr) -> Result<BoxConn, io::ErrorKind> {
        let to = node_of(addr).ok_or(io::ErrorKind::ConnectionRefused)?;
        {
            let cuts = self.cuts.borrow();
            if cuts.contains(&(from, to)) || cuts.contains(&(to, from)) {
                return Err(io::ErrorKind::TimedOut);
            }
        }
        let mut nodes = self.nodes.borrow_mut();
        let Some(node) = nodes.get_mut(&to) else {
            return Err(io::ErrorKind::ConnectionRefused);
        };
        let Some(shard) = node.shard.clone() else {
            return Err(io::ErrorKind::ConnectionRefused);
        };
        let latency = self.latency.borrow().get(&to).copied().unwrap_or_default();
        let (up, down) = (Pipe::new(from, to, latency), Pipe::new(to, from, latency));
        let server = End {
            rx: up.clone(),
            tx: down.clone(),
        };
        let client = End {
            rx: down.clone(),
            tx: up.clone(),
        };
        let (a, b) = (up.clone(), down.clone());
        let shutdown = move || reset_link(&a, &b);
        glommio::spawn_local(handle_connection(
            shard,
            server,
            shutdown,
            Faults::default(),
        ))
        .detach();
        node.links.push((up, down));
        Ok(Box::new(client))
    }
}

/// Connects host `from` (0: a writer; N: node N's gossip and rebuilds) through this
/// thread's simulated network.
struct SimConnector {
    from: u32,
}

impl Connector for SimConnector {
    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = io::Result<BoxConn>>>> {
        let net = NET.with(|n| n.borrow().clone());
        let Some(net) = net else {
            return Box::pin(async {
                Err(io::Error::other("no simulated network on this thread"))
            });
        };
        let result = net.connect(self.from, addr);
        Box::pin(async move {
            match result {
                Ok(conn) => Ok(conn),
                Err(io::ErrorKind::TimedOut) => {
                    glommio::timer::sleep(timeout).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect {addr}: no answer (partitioned)"),
                    ))
                }
                Err(kind) => Err(kind.into()),
            }
        })
    }
}

fn cluster_map() -> ClusterMap {
    let entries = (1..=NODES)
        .map(|id| NodeEntry {
            id,
            az: format!("az{}", (id - 1) / 2 + 1),
            addr: addr_of(id).ip(),
            base_port: addr_of(id).port(),
            shards: Some(1),
        })
        .collect();
    ClusterMap::new(entries).expect("a cluster map")
}

fn volume_config() -> VolumeConfig {
    let mut cfg = VolumeConfig::new(VOLUME);
    cfg.network = Network::Custom(Arc::new(SimConnector { from: 0 }));
    cfg.request_timeout = Duration::from_millis(400);
    cfg.connect_timeout = Duration::from_millis(100);
    cfg.quorum_timeout = Duration::from_secs(20);
    cfg.open_timeout = Duration::from_secs(30);
    cfg
}

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Drawn from the seed: connection resets and power cuts, at most two nodes down.
    Random,
    /// This node is down from the first commit until the workload ends, and nothing else
    /// goes wrong: it comes back far behind, below its peers' floors.
    DownThroughout(u32),
    /// A second writer opens the volume halfway through the first one's commits, while
    /// the first goes on and starts writing a PG it never wrote (the fenced-writer race of
    /// 68de674), over links of 0-7 ms one way. Commits of the first writer may then fail; those it was told are
    /// committed must be what the second one reads.
    ConcurrentOpen,
    /// As `Random`, and partitions: a node or a whole AZ cut off from every other host
    /// (writers included) both ways, or only what it sends, or only what it hears, for
    /// 4–220 ms; what a cut direction carries arrives when it heals (TCP retransmits),
    /// and a connect across it times out. At most two nodes are down or cut off at once.
    Partitions,
    /// As `Random`, and disk faults: a hot-log or page-store sync fails (the node must fail
    /// closed: nothing it has not synced counts, until a restart, which follows a few
    /// ticks later), or a `segments.meta` save fails with ENOSPC or EIO (the request that
    /// needed it is refused and leaves no trace). At most two nodes are down, cut off or
    /// broken at once.
    DiskFaults,
}

impl Plan {
    /// Every plan `hexad-sim --plan all` runs, in turn per seed.
    pub const ALL: [Plan; 5] = [
        Plan::Random,
        Plan::DownThroughout(3),
        Plan::ConcurrentOpen,
        Plan::Partitions,
        Plan::DiskFaults,
    ];

    pub fn name(self) -> String {
        match self {
            Plan::Random => "random".into(),
            Plan::DownThroughout(id) => format!("down:{id}"),
            Plan::ConcurrentOpen => "concurrent-open".into(),
            Plan::Partitions => "partitions".into(),
            Plan::DiskFaults => "disk-faults".into(),
        }
    }

    /// The plan `name` names (as [`Plan::name`] writes it).
    pub fn parse(name: &str) -> Result<Plan, String> {
        match name {
            "random" => Ok(Plan::Random),
            "concurrent-open" => Ok(Plan::ConcurrentOpen),
            "partitions" => Ok(Plan::Partitions),
            "disk-faults" => Ok(Plan::DiskFaults),
            _ => match name.strip_prefix("down:").map(str::parse::<u32>) {
                Some(Ok(id)) if (1..=NODES).contains(&id) => Ok(Plan::DownThroughout(id)),
                _ => Err(format!(
                    "unknown plan {name:?}: expected random, down:N (N in 1..={NODES}), concurrent-open, partitions or disk-faults"
                )),
            },
        }
    }
}

/// What one seed's run came to.
#[derive(Debug, Clone, Copy)]
pub struct SeedReport {
    /// Commits the writer was told are durable (each checked afterwards).
    pub acked: usize,
    /// Commits that failed: each may or may not be in the volume, and the checker accepts
    /// both (a failure within the failure model fails the seed instead).
    pub in_doubt: usize,
    pub power_cuts: u32,
}

/// The command that runs `seed` of `plan` alone and prints its event trace.
pub fn replay_command(seed: u64, plan: Plan) -> String {
    format!(
        "cargo run --release -p hexad-tests --bin hexad-sim -- --plan {} --seed {seed}",
        plan.name()
    )
}

async fn run_seed(seed: u64, plan: Plan) -> (Result<SeedReport, String>, Vec<String>) {
    let net = Rc::new(SimNet {
        nodes: RefCell::new(BTreeMap::new()),
        latency: RefCell::default(),
        writer: RefCell::default(),
        cuts: RefCell::default(),
        trace: RefCell::default(),
        started: Instant::now(),
    });
    NET.with(|n| *n.borrow_mut() = Some(net.clone()));
    let result = run_seed_on(&net, seed, plan).await;
    // Stop every node so their tasks end with the run.
    for id in 1..=NODES {
        let _ = net.cut_power(id);
    }
    NET.with(|n| *n.borrow_mut() = None);
    let trace = net.trace.borrow().clone();
    (result, trace)
}

async fn run_seed_on(net: &Rc<SimNet>, seed: u64, plan: Plan) -> Result<SeedReport, String> {
    if matches!(plan, Plan::ConcurrentOpen) {
        // Links of different speeds: a writer hears from some nodes well after others.
        let mut rng = Rng::new(seed ^ 0x1a7e);
        for id in 1..=NODES {
            let ms = rng.below(8);
            net.latency
                .borrow_mut()
                .insert(id, Duration::from_millis(ms));
            net.note(&format!("links to node {id}: {ms} ms one way"));
        }
    }
    for id in 1..=NODES {
        net.nodes.borrow_mut().insert(
            id,
            SimNode {
                media: Rc::new(MemMedia::default()),
                shard: None,
                tasks: Vec::new(),
                links: Vec::new(),
                power_cuts: 0,
            },
        );
        let disk_seed = seed * 100 + u64::from(id);
        net.start_node(
            id,
            SimDisk::new(LOG_FILES, LOG_FILE_BYTES, disk_seed),
            PageStore::simulated(disk_seed),
        )
        .await?;
    }
    let vol = Rc::new(
        Volume::open(cluster_map(), volume_config())
            .await
            .map_err(|e| format!("the first open failed: {e}"))?,
    );
    net.note("writer 1 opened the volume");
    *net.writer.borrow_mut() = Some(vol.clone());
    let reference: Rc<RefCell<Reference>> = Rc::default();
    let vdl_ok = Rc::new(Cell::new(true));
    let stop = Rc::new(Cell::new(false));
    let mut second = None;
    match plan {
        Plan::Random | Plan::Partitions | Plan::DiskFaults => {
            let mix = (plan == Plan::Partitions, plan == Plan::DiskFaults);
            let fault_task = glommio::spawn_local(faults(net.clone(), seed, mix, stop.clone()));
            workload(vol.clone(), reference.clone(), seed, vdl_ok.clone(), None).await;
            stop.set(true);
            fault_task.await?;
        }
        Plan::DownThroughout(id) => {
            let (disk, pages) = net.cut_power(id).ok_or("the node is down already")?;
            workload(vol.clone(), reference.clone(), seed, vdl_ok.clone(), None).await;
            // Give the others' coalescers time to move their floors past what it holds.
            glommio::timer::sleep(Duration::from_millis(300)).await;
            net.start_node(id, disk, pages).await?;
        }
        Plan::ConcurrentOpen => {
            let open = SecondOpen::default();
            workload(
                vol.clone(),
                reference.clone(),
                seed,
                vdl_ok.clone(),
                Some(open.clone()),
            )
            .await;
            second = Some(open.finish().await?);
        }
    }
    net.note(&format!("workload done; writer 1 VDL {}", vol.vdl()));
    if !vdl_ok.get() {
        return Err("writer 1's VDL moved backwards".into());
    }
    // A new writer opens the volume (recovery from 3 of 6, then it fences the old one),
    // unless one did during the workload.
    let vol2 = match second {
        Some(v) => v,
        None => Volume::open(cluster_map(), volume_config())
            .await
            .map_err(|e| format!("the second open failed: {e}"))?,
    };
    net.note(&format!("writer 2 opened the volume at VDL {}", vol2.vdl()));
    // The old writer must be fenced everywhere: on a PG nobody wrote yet (whose segments
    // the new writer's open never listed), and on one it wrote. The fresh PG goes first:
    // a refusal on the other would tell the old writer it is fenced, and it would then
    // refuse the second commit itself, whatever the nodes do.
    for page in [PageNo(5 * PG_PAGES), page_no(0)] {
        let refused = match vol.append(&changes(page, 63, &[0xee; 32])).await {
            Ok(lsn) => vol.wait_durable(lsn).await.err(),
            Err(e) => Some(e),
        };
        net.note(&format!(
            "writer 1 commits on page {page}: {}",
            refused
                .as_ref()
                .map_or("acknowledged".into(), |e| format!("refused: {e}"))
        ));
        if refused.is_none() {
            return Err(format!(
                "the old writer committed on page {page} after a new writer opened the volume"
            ));
        }
    }
    drop(vol);
    let reference = std::mem::take(&mut *reference.borrow_mut());
    for (page, commits) in &reference.pages {
        let read = vol2
            .read_page(PageNo(*page), None)
            .await
            .map_err(|e| format!("page {page}: read failed: {e}"))?;
        assert_eq!(read.data.len(), PAGE_BYTES);
        check_page(*page, &read.data, commits)?;
    }
    let commits = reference.pages.values().flatten();
    let acked = commits.clone().filter(|c| c.acked).count();
    // Faults stay within the failure model (at most two nodes down, each back soon), so
    // a write quorum was always within reach: a commit that failed is a liveness bug.
    if let Some(c) = commits
        .clone()
        .find(|c| !c.acked && plan != Plan::ConcurrentOpen)
    {
        return Err(format!(
            "a commit (bit {}, LSN {:?}) failed although four nodes were always up",
            c.bit, c.lsn
        ));
    }
    Ok(SeedReport {
        acked,
        in_doubt: commits.count() - acked,
        power_cuts: net.nodes.borrow().values().map(|n| n.power_cuts).sum(),
    })
}

/// Runs `seed` of `plan` on an executor of its own (on this thread) and returns the
/// outcome and the run's event trace; a run past [`SEED_DEADLINE`] is stuck and fails.
pub fn run(seed: u64, plan: Plan) -> (Result<SeedReport, String>, Vec<String>) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("cluster-sim")
        .make()
        .expect("an executor")
        .run(async move {
            let run =
                glommio::timer::timeout(SEED_DEADLINE, async { Ok(run_seed(seed, plan).await) });
            if let Ok(r) = run.await {
                return r;
            }
            // The run is stuck: its trace is still on the thread's network.
            let net = NET.with(|n| n.borrow_mut().take());
            let mut trace = net
                .as_ref()
                .map(|n| n.trace.borrow().clone())
                .unwrap_or_default();
            if let Some(vol) = net.and_then(|n| n.writer.borrow_mut().take()) {
                trace.push(format!("stuck: writer 1 VDL {}", vol.vdl()));
                for p in vol.peer_stats() {
                    trace.push(format!("stuck: {p:?}"));
                }
            }
            (
                Err(format!(
                    "seed {seed} did not finish within {SEED_DEADLINE:?}"
                )),
                trace,
            )
        })
}
