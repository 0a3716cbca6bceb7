//! `--fault PLAN`: node faults at set times during a run, so an SLO can be tested through a
//! pause, a loss and a restart. `PLAN` is `;`-separated steps `at=<time> <action>
//! node=<id>`, e.g. `at=10s stop node=3; at=20s cont node=3; at=30s kill node=5;
//! at=40s restart node=5`. Actions: `stop` (SIGSTOP), `cont` (SIGCONT), `kill` (SIGKILL),
//! `restart` (start a killed node again on its data). Times count from the start of the
//! load (ramp included). Local target only so far: its nodes are this program's children.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::local::NodeHandle;

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

/// Parses a plan; steps come back in time order.
pub fn parse(plan: &str, nodes: u32) -> Result<Vec<Step>> {
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
        if node == 0 || node > nodes {
            bail!("fault {raw:?}: node {node} is not one of the {nodes} nodes");
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
    nodes: NodeHandle,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_in_time_order_and_bad_ones_say_why() {
        let steps = parse(
            "at=20s cont node=3; at=10s stop node=3 ;at=1500ms kill node=5",
            6,
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
            ("at=1s stop node=7", "node 7 is not one of the 6 nodes"),
            ("at=soon stop node=1", "soon"),
            (" ; ", "no steps"),
        ] {
            let e = parse(plan, 6).unwrap_err().to_string();
            assert!(e.contains(needle), "{plan:?}: {e}");
        }
    }
}
