//! `--fault PLAN`: node faults at set times during a run, so an SLO can be tested through a
//! pause, a loss and a restart. `PLAN` is `;`-separated steps `at=<time> <action>
//! node=<id>`, e.g. `at=10s stop node=3; at=20s cont node=3; at=30s kill node=5;
//! at=40s restart node=5`. Actions: `stop` (SIGSTOP), `cont` (SIGCONT), `kill` (SIGKILL),
//! `restart` (start a killed node again on its data). Times count from the start of the
//! load (ramp included).
//!
//! The local target's nodes are this program's children ([`crate::local::NodeHandle`]).
//! A running cluster started by `scripts/cluster.sh start DIR` is reached through DIR
//! ([`ScriptNodes`]): its PID files say which process is which node, and a killed node is
//! restarted with the command line it had.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The nodes a fault plan acts on, by node id.
pub trait Nodes: Send + 'static {
    /// Sends `signal` to node `id`.
    fn signal(&self, id: u32, signal: Signal) -> Result<()>;
    /// SIGKILLs node `id` and waits until it is gone.
    fn kill(&self, id: u32) -> Result<()>;
    /// Starts node `id` again after a kill (on the same data: it recovers its log) and
    /// waits until it is ready.
    fn restart(&self, id: u32) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Cont,
    Kill,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
    pub node: u32,
}

/// Parses a plan for the nodes `ids`; steps come back in time order.
pub fn parse(plan: &str, ids: &[u32]) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for raw in plan.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (mut at, mut action, mut node) = (None, None, None);
        for word in raw.split_whitespace() {
            if let Some(t) = word.strip_prefix("at=") {
                at = Some(crate::slo::parse_duration(t).map_err(anyhow::Error::msg)?);
            } else if let Some(n) = word.strip_prefix("node=") {
                node = Some(
                    n.parse::<u32>()
                        .with_context(|| format!("fault {raw:?}: node={n}"))?,
                );
            } else {
                action = Some(match word {
                    "stop" => Action::Stop,
                    "cont" => Action::Cont,
                    "kill" => Action::Kill,
                    "restart" => Action::Restart,
                    other => bail!(
                        "fault {raw:?}: unknown word {other:?} (expected at=TIME, stop|cont|kill|restart, node=ID)"
                    ),
                });
            }
        }
        let (Some(at), Some(action), Some(node)) = (at, action, node) else {
            bail!("fault {raw:?}: a step needs at=TIME, an action and node=ID");
        };
        if !ids.contains(&node) {
            bail!("fault {raw:?}: node {node} is not one of the nodes {ids:?}");
        }
        steps.push(Step { at, action, node });
    }
    if steps.is_empty() {
        bail!("--fault: no steps in {plan:?}");
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

/// Applies `steps` from `start` on a thread of its own until they are done or `stop` is
/// dropped; says what it did on stderr.
pub fn spawn(
    nodes: Box<dyn Nodes>,
    steps: Vec<Step>,
    start: Instant,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<Result<()>>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        for step in steps {
            let wait = (start + step.at).saturating_duration_since(Instant::now());
            if !matches!(
                stopped.recv_timeout(wait),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return Ok(());
            }
            let n = step.node;
            let done = match step.action {
                Action::Stop => nodes.signal(n, Signal::SIGSTOP),
                Action::Cont => nodes.signal(n, Signal::SIGCONT),
                Action::Kill => nodes.kill(n),
                Action::Restart => nodes.restart(n),
            };
            eprintln!(
                "[{:>6.1}s] fault: {:?} node {n}{}",
                start.elapsed().as_secs_f64(),
                step.action,
                done.as_ref()
                    .err()
                    .map_or(String::new(), |e| format!(" FAILED: {e:#}"))
            );
            done?;
        }
        Ok(())
    });
    (stop, thread)
}

/// The nodes of a cluster started by `scripts/cluster.sh start DIR`.
pub struct ScriptNodes {
    dir: PathBuf,
    /// Each killed node's program and arguments, read from `/proc` before the kill.
    killed: Mutex<HashMap<u32, (PathBuf, Vec<OsString>)>>,
}

/// Longest a restarted node may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_mins(1);

impl ScriptNodes {
    /// The cluster run from `dir`; every node in `ids` must have a PID file there.
    pub fn new(dir: &Path, ids: &[u32]) -> Result<ScriptNodes> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--cluster-dir {}", dir.display()))?;
        let nodes = ScriptNodes {
            dir,
            killed: Mutex::default(),
        };
        for id in ids {
            nodes.pid(*id)?;
        }
        Ok(nodes)
    }

    fn pid_file(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node{id}.pid"))
    }

    /// Node `id`'s process, if it is running and is the node started for this directory
    /// (the same check as the script's, so a reused PID is never signalled).
    fn pid(&self, id: u32) -> Result<Pid> {
        let file = self.pid_file(id);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("node {id}: reading {}", file.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("node {id}: {} holds {text:?}", file.display()))?;
        let argv = cmdline(pid).unwrap_or_default();
        let ours = argv.windows(2).any(|w| {
            w[0] == "--data-root" && Path::new(&w[1]).canonicalize().is_ok_and(|d| d == self.dir)
        }) && argv.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hexad-"))
        });
        if !ours {
            bail!(
                "node {id} (pid {pid}) is not running from {}",
                self.dir.display()
            );
        }
        Ok(Pid::from_raw(pid))
    }
}

/// A process's arguments (empty for a zombie or a process that is gone).
fn cmdline(pid: i32) -> Option<Vec<OsString>> {
    let mut raw = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .read_to_end(&mut raw)
        .ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
    )
}

impl Nodes for ScriptNodes {
    fn signal(&self, id: u32, signal: Signal) -> Result<()> {
        nix::sys::signal::kill(self.pid(id)?, signal)
            .with_context(|| format!("signalling node {id}"))
    }

    fn kill(&self, id: u32) -> Result<()> {
        let pid = self.pid(id)?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("node {id}: reading its program"))?;
        let argv = cmdline(pid.as_raw()).unwrap_or_default();
        nix::sys::signal::kill(pid, Signal::SIGKILL)
            .with_context(|| format!("killing node {id}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid(id).is_ok() {
            if Instant::now() > deadline {
                bail!("node {id} (pid {pid}) still runs 10 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.killed
            .lock()
            .expect("not poisoned")
            .insert(id, (exe, argv));
        Ok(())
    }

    fn restart(&self, id: u32) -> Result<()> {
        let Some((exe, argv)) = self.killed.lock().expect("not poisoned").remove(&id) else {
            bail!("node {id} was not killed by this run, so its command line is unknown");
        };
        let log_path = self.dir.join(format!("node{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let from = log.metadata()?.len();
        let mut child = std::process::Command::new(&exe)
            .args(argv.iter().skip(1))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id} ({})", exe.display()))?;
        std::fs::write(self.pid_file(id), format!("{}\n", child.id()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
            if new.contains(" ready: ") {
                // The node outlives this program, as one the script started would (dropping
                // the handle neither kills nor waits for it).
                return Ok(());
            }
            // Its own process, not the PID file's check: until the exec completes, /proc
            // still shows this program's command line.
            if child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "node {id} did not become ready after its restart; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_in_time_order_and_bad_ones_say_why() {
        let steps = parse(
            "at=20s cont node=3; at=10s stop node=3 ;at=1500ms kill node=5",
            &[1, 2, 3, 4, 5, 6],
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step {
                    at: Duration::from_millis(1500),
                    action: Action::Kill,
                    node: 5
                },
                Step {
                    at: Duration::from_secs(10),
                    action: Action::Stop,
                    node: 3
                },
                Step {
                    at: Duration::from_secs(20),
                    action: Action::Cont,
                    node: 3
                },
            ]
        );
        for (plan, needle) in [
            ("at=1s pause node=1", "unknown word \"pause\""),
            ("at=1s stop", "needs at=TIME, an action and node=ID"),
            (
                "at=1s stop node=7",
                "node 7 is not one of the nodes [1, 2, 3, 4, 5, 6]",
            ),
            ("at=soon stop node=1", "soon"),
            (" ; ", "no steps"),
        ] {
            let e = parse(plan, &[1, 2, 3, 4, 5, 6]).unwrap_err().to_string();
            assert!(e.contains(needle), "{plan:?}: {e}");
        }
    }
}
