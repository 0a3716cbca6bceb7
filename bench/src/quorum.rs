//! `hexad-bench write --target local|cluster:FILE`: commits and page reads through the
//! quorum client.
//!
//! Each of `numjobs` jobs is a volume of its own (`volume_base + j`) with `iodepth`
//! operations in flight. A write is a one-record mini-transaction: append, then wait until
//! VDL passes it, so its latency runs from append to durable on a write quorum of the PG. A
//! read is `Volume::read_page` at VDL (one node, hedged). Read jobs commit every page once
//! first.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hexad_client::placement::{ClusterMap, NodeEntry};
use hexad_client::volume::{Change, Volume, VolumeConfig};
use hexad_client::wire::Op;
use hexad_client::{PageNo, VolumeId, PAGE_BYTES};
use serde::Deserialize;

use crate::drive::{measure, Operation, Plan};
use crate::report::{PageWork, Shape, TargetStats};

/// How long the page-store counters may take per shard.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
use crate::write::{Rw, WriteArgs};

#[derive(Deserialize)]
struct ClusterFile {
    #[serde(default)]
    defaults: Defaults,
    node: Vec<NodeEntry>,
}

#[derive(Deserialize, Default)]
struct Defaults {
    shards: Option<u16>,
}

/// A cluster file's nodes, and the shards per node where an entry does not say.
pub fn load_cluster(path: &Path) -> Result<(ClusterMap, u16)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ClusterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let map = ClusterMap::new(file.node).with_context(|| format!("cluster {}", path.display()))?;
    Ok((map, file.defaults.shards.unwrap_or(1)))
}

/// Runs the commit load against the nodes of `map`; `cpu` says where the nodes' CPU time
/// is read (the local target's child processes, or `None` to ask the nodes' `Stats`).
pub fn run_on(
    args: &WriteArgs,
    map: ClusterMap,
    default_shards: u16,
    cpu: Option<crate::cpu::NodeCpu>,
    slo: Option<&[crate::slo::Target]>,
) -> Result<Histogram<u64>> {
    let configs: Vec<VolumeConfig> = (0..args.numjobs as u64)
        .map(|j| {
            let mut cfg = VolumeConfig::new(VolumeId(args.volume_base + j));
            cfg.default_shards = default_shards;
            cfg
        })
        .collect();
    let rw = Rw::parse(&args.rw)?;
    let pages = crate::write::parse_size(&args.size)? / PAGE_BYTES as u64;
    let plan = Plan::for_job(args, rw, args.iodepth * args.numjobs, args.bs);
    let (bs, mix_read) = (args.bs, args.rwmixread);
    let shard_addrs: Vec<std::net::SocketAddr> = map
        .nodes()
        .flat_map(|n| {
            (0..n.shards.unwrap_or(default_shards)).map(|s| n.shard_addr(hexad_client::ShardId(s)))
        })
        .collect();
    let cpu = cpu.unwrap_or_else(|| crate::cpu::NodeCpu::Stats(shard_addrs.clone()));
    // `None` if a shard does not answer (a node stopped or killed by a fault plan).
    let before = crate::drive::sum_stats(&shard_addrs, STATS_TIMEOUT).ok();
    let loaded = crate::drive::on_executor(move || async move {
        let mut vols = Vec::new();
        for cfg in configs {
            let id = cfg.volume;
            let vol = Volume::open(map.clone(), cfg).await;
            vols.push(vol.with_context(|| format!("opening volume {}", id.0))?);
        }
        let job = Rc::new(Job {
            vols,
            bs,
            rw,
            pages,
            mix_read,
        });
        if rw.any_reads() {
            prefill(&job, plan.quiet).await?;
        }
        measure(job, plan, &cpu).await
    })?;
    let after = crate::drive::sum_stats(&shard_addrs, STATS_TIMEOUT).ok();
    let work = before
        .zip(after)
        .map(|(b, a)| PageWork::between(&b, &a, loaded.elapsed_s));
    let shape = Shape {
        path: "quorum",
        rw,
        pages,
        batch: None,
        bytes_per_op: plan.bytes_per_op,
        kinds: ["commit", "read"],
    };
    crate::report::finish(args, &shape, loaded, TargetStats::Quorum(work), slo)
}

/// One operation of the job: a commit (a one-record mini-transaction, appended and waited
/// for) or a page read at VDL.
struct Job {
    /// One volume per job of `--numjobs`.
    vols: Vec<Volume>,
    bs: usize,
    rw: Rw,
    pages: u64,
    /// Percent reads of a randrw job.
    mix_read: u8,
}

/// Operation kinds a job reports (`drive::Operation::run`).
const WRITE: usize = 0;
const READ: usize = 1;

impl Job {
    /// Page `k` of the job's range: alternately in PG 0 and PG 1, so the job fans out to
    /// two segment sets.
    fn page(k: u64) -> PageNo {
        PageNo((k % 2) * hexad_client::PG_PAGES + k / 2)
    }

    async fn commit(&self, vol: &Volume, page: PageNo, i: u64) -> Result<()> {
        let mut payload = vec![(i % 251) as u8; self.bs.max(4)];
        payload[..4].copy_from_slice(&0u32.to_le_bytes());
        let change = Change {
            page,
            op: Op::WriteBytes,
            payload: Bytes::from(payload),
        };
        let lsn = vol.append(&[change]).await?;
        vol.wait_durable(lsn).await?;
        Ok(())
    }
}

impl Operation for Job {
    async fn run(&self, i: u64) -> Result<usize> {
        let jobs = self.vols.len() as u64;
        // With depth = iodepth × numjobs, a closed-loop worker always lands on one volume.
        let vol = &self.vols[(i % jobs) as usize];
        let i = i / jobs;
        let page = Job::page(self.rw.pick(i, self.pages));
        if self.rw.is_read(i, self.mix_read) {
            vol.read_page(page, None).await?;
            Ok(READ)
        } else {
            self.commit(vol, page, i).await?;
            Ok(WRITE)
        }
    }
}

/// Writes every page of every volume of a read job once (64 commits in flight per
/// volume), so reads find data.
async fn prefill(job: &Rc<Job>, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!(
            "prefilling {} pages in each of {} volumes for the read job",
            job.pages,
            job.vols.len()
        );
    }
    let j = job.clone();
    crate::drive::fill_pages(job.vols.len(), job.pages, 64, move |v, k| {
        let job = j.clone();
        async move { job.commit(&job.vols[v], Job::page(k), k).await }
    })
    .await
}
