//! Helpers for tests that run real `hexad-node` processes: free ports, config files, start
//! with a bounded wait for readiness, SIGKILL, and a deterministic record generator; and
//! the whole-cluster simulation ([`sim`]), which `hexad-sim` and `tests/cluster_sim.rs` run.

pub mod sim;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hexad_client::blocking::Connection;
use hexad_client::wire::{Op, Record};
use hexad_client::{Lsn, PageNo, PgIndex};

/// How long a node may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of test connections.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `count` consecutive free TCP ports on 127.0.0.1. Ports come from a per-process counter
/// below the kernel's ephemeral range (so parallel tests never draw the same port, and no
/// outgoing connection takes one), offset by the process id; each is checked by binding.
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() * 97) % SPAN;
    for _ in 0..500 {
        let n = NEXT.fetch_add(u32::from(count), Ordering::Relaxed);
        let base = FIRST + (offset + n) % (SPAN - u32::from(count));
        let base = base as u16;
        let all: Result<Vec<_>, _> = (0..count)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if all.is_ok() {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

/// A fresh, empty directory `root/NAME-PID` (root should be on a real disk, not tmpfs).
/// Directories of the same name left by earlier test processes that are no longer running
/// are removed first: node data (preallocated hot logs) would otherwise pile up run after
/// run.
pub fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let file_name = e.file_name();
            let Some(pid) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(name)?.strip_prefix('-')?.parse::<i32>().ok())
            else {
                continue;
            };
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err();
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Options for one test node.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    pub shards: u16,
    pub file_bytes: u64,
    pub file_count: u32,
    pub sync: &'static str,
    pub max_writes_in_flight: usize,
    /// Extra environment for every node of a [`Cluster`] (e.g. fault injection); `{id}` in
    /// a value becomes the node's id.
    pub env: Vec<(String, String)>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            shards: 1,
            file_bytes: 8 << 20,
            file_count: 8,
            sync: "dsync",
            max_writes_in_flight: 2,
            env: Vec::new(),
        }
    }
}

/// Writes a node config into `dir/node.toml`; data goes to `dir/data`.
pub fn write_config(dir: &Path, port: u16, opts: &NodeOpts) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "node_id = 1\naz = \"az1\"\ndata_dir = \"{}\"\nlisten_addr = \"127.0.0.1\"\nbase_port = {port}\n\
             shards = {}\npin_shards = false\n[hot_log]\nfile_bytes = {}\nfile_count = {}\nsync = \"{}\"\n\
             [group_commit]\nmax_writes_in_flight = {}\n",
            data.display(),
            opts.shards,
            opts.file_bytes,
            opts.file_count,
            opts.sync,
            opts.max_writes_in_flight
        ),
    )
    .unwrap();
    path
}

/// A running node process, killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub port: u16,
    /// Lines the node printed while starting.
    pub startup: Vec<String>,
}

impl NodeProcess {
    /// Starts `bin --config config` and waits (bounded) for its "ready" line.
    pub fn start(bin: &Path, config: &Path, port: u16) -> NodeProcess {
        let args = ["--config".as_ref(), config.as_os_str()];
        NodeProcess::start_with(bin, &args, port)
    }

    /// Starts `bin ARGS` and waits (bounded) for its "ready" line.
    pub fn start_with(bin: &Path, args: &[&std::ffi::OsStr], port: u16) -> NodeProcess {
        NodeProcess::start_with_env(bin, args, &[], port)
    }

    /// [`NodeProcess::start_with`] with extra environment variables.
    pub fn start_with_env(
        bin: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(String, String)],
        port: u16,
    ) -> NodeProcess {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hexad-node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut startup = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains(" ready: ");
                    startup.push(line);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait for node");
                    panic!("node exited during startup ({status}); it printed {startup:?} (its stderr is above)");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("node did not become ready within {START_TIMEOUT:?}; it printed {startup:?}");
                }
            }
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        NodeProcess {
            child,
            port,
            startup,
        }
    }

    pub fn addr(&self, shard: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + shard))
    }

    pub fn connect(&self, shard: u16) -> Connection {
        Connection::connect(self.addr(shard), IO_TIMEOUT).expect("connect to node")
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin` with `args` and returns (exit code, stderr), bounded by `timeout`.
pub fn run_to_exit(bin: &Path, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} did not exit within {timeout:?}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bin` with `args`, bounded by `timeout`, and returns (exit code, stdout and stderr
/// together, in the order read). Both pipes are drained while it runs.
pub fn run_with_output(bin: &Path, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let t1 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = t1.send(line);
            }
        }),
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let seen: Vec<String> = rx.try_iter().collect();
            panic!(
                "{} {args:?} did not exit within {timeout:?}; it printed:\n{}",
                bin.display(),
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    let lines: Vec<String> = rx.try_iter().collect();
    (status.code(), lines.join("\n"))
}

/// The record a test writes at `lsn` in a PG whose chain is `prev -> lsn`: a
/// `payload_bytes`-byte `WriteBytes` whose content is derived from the LSN, so any stored copy
/// can be checked byte for byte.
pub fn test_record(pg: PgIndex, lsn: u64, prev: u64, payload_bytes: usize) -> Record {
    assert!(payload_bytes >= 4);
    let mut payload = 64u32.to_le_bytes().to_vec();
    let mut x = lsn.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while payload.len() < payload_bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.push(x as u8);
    }
    let page = PageNo(pg.first_page().0 + lsn % 1000);
    Record::new(
        Lsn(lsn),
        Lsn(prev),
        Lsn(0),
        page,
        Op::WriteBytes,
        lsn.is_multiple_of(4),
        &payload,
    )
}

/// `GetPage` of `page` of `volume` from shard 0 of `node`, as of `read`, where `complete` is
/// the PG's last record at or below `read` (no page head).
pub fn get_page(
    node: &NodeProcess,
    volume: hexad_client::VolumeId,
    page: PageNo,
    read: Lsn,
    complete: Lsn,
) -> hexad_client::wire::Message {
    node.connect(0)
        .call(&hexad_client::wire::Message::GetPage {
            volume,
            pg: page.pg(),
            page,
            read_lsn: read,
            complete_lsn: complete,
            page_head: Lsn::NONE,
        })
        .unwrap()
}

/// Mini-transaction `seq` of the counter workload: on `page`, 16 bytes written at offset 8
/// (`seq` and its complement) and `seq` added to the u64 at offset 0, so a page's bytes
/// show both which write came last and that every add was applied exactly once.
pub fn counter_changes(page: PageNo, seq: u64) -> [hexad_client::volume::Change; 2] {
    use hexad_client::volume::Change;
    let mut bytes = 8u32.to_le_bytes().to_vec();
    bytes.extend(seq.to_le_bytes());
    bytes.extend((!seq).to_le_bytes());
    let mut add = 0u32.to_le_bytes().to_vec();
    add.extend(seq.to_le_bytes());
    [
        Change {
            page,
            op: Op::WriteBytes,
            payload: bytes::Bytes::from(bytes),
        },
        Change {
            page,
            op: Op::AddU64,
            payload: bytes::Bytes::from(add),
        },
    ]
}

/// A local cluster of real node processes described by a cluster file in `dir`.
pub struct Cluster {
    pub file: PathBuf,
    pub data_root: PathBuf,
    pub ports: Vec<u16>,
    bin: PathBuf,
    pub nodes: Vec<Option<NodeProcess>>,
    /// Extra environment for each node's next start (by node id).
    pub env: std::collections::HashMap<u32, Vec<(String, String)>>,
    /// Each node's AZ number (`az1` is 1), by node id - 1.
    azs: Vec<u32>,
}

impl Cluster {
    /// Writes a cluster file for `azs` AZs of `per_az` nodes (ids from 1, `az1`, `az2`, ...)
    /// with one shard each and small hot logs, and starts every node.
    pub fn start(bin: &Path, dir: &Path, azs: u32, per_az: u32, opts: &NodeOpts) -> Cluster {
        let sizes = vec![per_az; azs as usize];
        Cluster::start_sized(bin, dir, &sizes, opts)
    }

    /// [`Cluster::start`] with `sizes[i]` nodes in AZ `i + 1` (e.g. a spare node in one).
    pub fn start_sized(bin: &Path, dir: &Path, sizes: &[u32], opts: &NodeOpts) -> Cluster {
        let azs: Vec<u32> = sizes
            .iter()
            .enumerate()
            .flat_map(|(a, n)| std::iter::repeat_n(a as u32 + 1, *n as usize))
            .collect();
        let count = azs.len() as u32;
        let mut text = format!(
            "[defaults]\nshards = 1\npin_shards = false\n[defaults.hot_log]\nfile_bytes = {}\nfile_count = {}\n",
            opts.file_bytes, opts.file_count
        );
        let mut ports = Vec::new();
        for (i, az) in azs.iter().enumerate() {
            let port = free_ports(1);
            ports.push(port);
            let _ = write!(text, "[[node]]\nid = {}\naz = \"az{az}\"\naddr = \"127.0.0.1\"\nbase_port = {port}\nshards = 1\n", i + 1);
        }
        let file = dir.join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        let mut c = Cluster {
            file,
            data_root: dir.join("data"),
            ports,
            bin: bin.to_owned(),
            nodes: Vec::new(),
            env: (1..=count)
                .map(|id| {
                    let vars = opts
                        .env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.replace("{id}", &id.to_string())));
                    (id, vars.collect())
                })
                .collect(),
            azs,
        };
        for id in 1..=count {
            let node = c.spawn(id);
            c.nodes.push(Some(node));
        }
        c
    }

    fn spawn(&self, id: u32) -> NodeProcess {
        let id_s = id.to_string();
        let args = [
            "--cluster".as_ref(),
            self.file.as_os_str(),
            "--node-id".as_ref(),
            id_s.as_ref(),
            "--data-root".as_ref(),
            self.data_root.as_os_str(),
        ];
        let env = self.env.get(&id).map_or(&[][..], Vec::as_slice);
        NodeProcess::start_with_env(&self.bin, &args, env, self.ports[id as usize - 1])
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.data_root.join(format!("node{id}"))
    }

    /// SIGKILLs node `id` (1-based).
    pub fn kill(&mut self, id: u32) {
        if let Some(n) = self.nodes[id as usize - 1].take() {
            n.kill9();
        }
    }

    /// Restarts node `id` after a kill.
    pub fn restart(&mut self, id: u32) {
        assert!(
            self.nodes[id as usize - 1].is_none(),
            "node {id} is running"
        );
        let node = self.spawn(id);
        self.nodes[id as usize - 1] = Some(node);
    }

    /// The cluster map a client uses for these nodes (the same as the cluster file).
    pub fn map(&self) -> hexad_client::placement::ClusterMap {
        let entries = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| hexad_client::placement::NodeEntry {
                id: i as u32 + 1,
                az: format!("az{}", self.azs[i]),
                addr: [127, 0, 0, 1].into(),
                base_port: *port,
                shards: Some(1),
            })
            .collect();
        hexad_client::placement::ClusterMap::new(entries).expect("a valid test cluster")
    }

    pub fn node(&self, id: u32) -> &NodeProcess {
        self.nodes[id as usize - 1].as_ref().expect("node running")
    }

    /// Node `id`'s `GetStats` (shard 0).
    pub fn stats(&self, id: u32) -> hexad_client::wire::NodeStats {
        match self
            .node(id)
            .connect(0)
            .call(&hexad_client::wire::Message::GetStats)
            .unwrap()
        {
            hexad_client::wire::Message::Stats(s) => s,
            other => panic!("GetStats from node {id}: {other:?}"),
        }
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to node `id`.
    pub fn signal(&self, id: u32, signal: nix::sys::signal::Signal) {
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.node(id).pid()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

/// Payload of record `i` of mini-transaction `seq` by writer `writer` (hexad-test-writer):
/// a `WriteBytes` at offset 0 whose bytes name all three, padded to 120 bytes with bytes
/// derived from them, so any stored copy can be checked exactly.
pub fn writer_payload(writer: u32, seq: u64, i: u32) -> Vec<u8> {
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend(format!("w{writer}-s{seq}-r{i}-").as_bytes());
    let mut x = (u64::from(writer) << 48) ^ (seq << 8) ^ u64::from(i) ^ 0x9e37_79b9_7f4a_7c15;
    while p.len() < 124 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// A running `hexad-test-writer`, its stdout lines collected by a thread.
pub struct WriterProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl WriterProcess {
    pub fn start(bin: &Path, cluster: &Path, args: &[&str]) -> WriterProcess {
        let mut child = Command::new(bin)
            .arg("--cluster")
            .arg(cluster)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hexad-test-writer");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        WriterProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Collects lines until one starts with `prefix` (returned), or panics after `timeout`
    /// or if the process ends first.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_for_any(&[prefix], timeout)
    }

    /// Like [`WriterProcess::wait_for`], for the first line with any of `prefixes`.
    pub fn wait_for_any(&mut self, prefixes: &[&str], timeout: Duration) -> String {
        let prefix = prefixes.join("|");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if prefixes.iter().any(|p| line.starts_with(p)) {
                        return line;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {prefix:?} line within {timeout:?}; last lines: {:?}",
                        self.tail()
                    )
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "writer exited before a {prefix:?} line; last lines: {:?}",
                        self.tail()
                    )
                }
            }
        }
    }

    /// Collects whatever lines are available now, without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Waits for the process to exit (bounded), collecting every line; returns its code.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF; take what it still holds.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.seen.push(line);
                }
                return (status.code(), std::mem::take(&mut self.seen));
            }
            assert!(
                Instant::now() < deadline,
                "writer did not exit within {timeout:?}; last lines: {:?}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    pub fn kill9(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }

    fn tail(&self) -> &[String] {
        &self.seen[self.seen.len().saturating_sub(8)..]
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a writer output line (`"OPEN vdl=12 ..."`, `"vdl"` → `"12"`).
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let want = format!("{key}=");
    line.split(' ')
        .find_map(|w| w.strip_prefix(want.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}
