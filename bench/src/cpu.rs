//! CPU time used during a measured window, by the writer (this process) and by the nodes,
//! and its cost per operation: the figure to optimise, because it holds still on a busy
//! machine where operations per second do not.
//!
//! - the writer: `getrusage(RUSAGE_SELF)` of this process (every thread: the executor that
//!   runs the client, and the bench's own bookkeeping, which is small);
//! - the nodes of `--target local`: `/proc/PID/stat` (user + system, every thread) of each
//!   child node process, in clock ticks (10 ms here, so a window of seconds is exact to
//!   well under 1%);
//! - the nodes of `cluster:` and `node:` targets: the `process_cpu_us` field of each node's
//!   `Stats` (its own `getrusage`, reported by shard 0). That sample is a blocking
//!   `GetStats` per shard on the load's executor thread, at the two edges of the window
//!   only: about a millisecond on loopback, during which no operation is started.
//!
//! Kernel work done for a process outside its threads (softirq network processing that
//! lands on another task, the block layer's completion interrupts) is not charged to it, so
//! the sum is a little below what the whole machine spent; `/usr/bin/time` around a run
//! gives the machine-wide figure, start-up included.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// Where the nodes' CPU time comes from.
#[derive(Clone)]
pub enum NodeCpu {
    /// The local target's node processes (a killed node counts from its restart).
    Children(Arc<Mutex<Vec<Option<std::process::Child>>>>),
    /// `GetStats` of these shards (`process_cpu_us`, sent by each node's shard 0).
    Stats(Vec<SocketAddr>),
    /// No nodes (the file target).
    None,
}

/// CPU microseconds used so far: this process, and the nodes (if they could be asked).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    writer_us: u64,
    nodes_us: Option<u64>,
}

/// How long a node may take to answer `GetStats` for a sample.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

impl NodeCpu {
    /// CPU used so far by this process and the nodes.
    pub fn sample(&self) -> Sample {
        Sample {
            writer_us: own_cpu_us(),
            nodes_us: self.nodes_us().ok(),
        }
    }

    fn nodes_us(&self) -> Result<u64> {
        match self {
            NodeCpu::Children(children) => {
                let pids: Vec<u32> = children
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .flatten()
                    .map(std::process::Child::id)
                    .collect();
                pids.into_iter().map(process_cpu_us).sum()
            }
            NodeCpu::Stats(shards) => {
                Ok(crate::drive::sum_stats(shards, STATS_TIMEOUT)?.process_cpu_us)
            }
            NodeCpu::None => Ok(0),
        }
    }
}

/// CPU used between two samples, per operation.
#[derive(Debug, Clone, Copy, Serialize)]
#[allow(clippy::struct_field_names)] // they are the JSON keys
pub struct CpuUse {
    /// CPU seconds of the writer (this process) in the window.
    pub cpu_writer_s: f64,
    /// CPU seconds of all nodes in the window (null if a node did not answer).
    pub cpu_nodes_s: Option<f64>,
    /// Writer + nodes, microseconds per operation (writer alone if the nodes' is unknown).
    pub cpu_us_per_op: f64,
}

impl CpuUse {
    pub fn between(a: Sample, b: Sample, ops: u64) -> CpuUse {
        let writer = b.writer_us.saturating_sub(a.writer_us);
        let nodes = a.nodes_us.zip(b.nodes_us).map(|(a, b)| b.saturating_sub(a));
        let total = writer + nodes.unwrap_or(0);
        CpuUse {
            cpu_writer_s: writer as f64 / 1e6,
            cpu_nodes_s: nodes.map(|n| n as f64 / 1e6),
            cpu_us_per_op: total as f64 / ops.max(1) as f64,
        }
    }

    /// The summary line.
    pub fn line(&self) -> String {
        let nodes = self
            .cpu_nodes_s
            .map_or("nodes unknown (a node did not answer)".to_string(), |n| {
                format!("nodes {n:.2} s")
            });
        format!(
            "cpu: writer {:.2} s, {nodes}; {:.1} us of CPU per operation",
            self.cpu_writer_s, self.cpu_us_per_op
        )
    }
}

/// This process's user + system CPU time so far, in microseconds.
pub fn own_cpu_us() -> u64 {
    hexad_node::usage::process_cpu_us()
}

/// A process's user + system CPU time (all its threads) from `/proc/PID/stat`, in
/// microseconds.
pub fn process_cpu_us(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
    let per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Ok(ticks * 1_000_000 / per_s)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its closing one.
fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' after the command name")?;
    // After the name: field 3 (state) is the first; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("too few fields")?
            .parse::<u64>()
            .with_context(|| format!("field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (n1 shard) 0) S 1 4242 4242 0 -1 4194560 500 0 0 0 123 45 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(line).unwrap(), 168);
        assert!(stat_cpu_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn this_process_uses_cpu_and_proc_agrees_with_getrusage() {
        let t0 = own_cpu_us();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let t1 = own_cpu_us();
        assert!(t1 > t0, "getrusage did not move: {t0} -> {t1}");
        let proc_us = process_cpu_us(std::process::id()).unwrap();
        // /proc counts in clock ticks: within a few ticks of getrusage.
        assert!(
            proc_us.abs_diff(t1) < 100_000,
            "/proc says {proc_us} us, getrusage {t1} us"
        );
    }

    #[test]
    fn cost_per_operation_adds_writer_and_nodes() {
        let a = Sample {
            writer_us: 1_000,
            nodes_us: Some(10_000),
        };
        let b = Sample {
            writer_us: 3_000,
            nodes_us: Some(18_000),
        };
        let u = CpuUse::between(a, b, 100);
        assert!((u.cpu_us_per_op - 100.0).abs() < 1e-9);
        assert_eq!(u.cpu_nodes_s, Some(0.008));
        let unknown = CpuUse::between(
            a,
            Sample {
                nodes_us: None,
                ..b
            },
            100,
        );
        assert!((unknown.cpu_us_per_op - 20.0).abs() < 1e-9);
        assert!(unknown.line().contains("nodes unknown"));
    }
}
