//! The faults a simulated run injects while its workload runs: connection resets, power
//! cuts, partitions and disk faults, drawn from the seed, within the failure model.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use hexad_node::disk::sim::{Rng, SimDisk};
use hexad_node::pagestore::PageStore;

use super::{SimNet, NODES};

/// A disk fault: the next sync of the hot log or the page store fails, or the next
/// `segments.meta` save (with ENOSPC when `full`, else EIO).
#[derive(Clone, Copy, Debug)]
pub(super) enum DiskFault {
    LogSync,
    PageSync,
    MetaSave {
        full: bool,
    },
    /// 64 bytes flip in a written sector of the hot log (which one: the number, modulo
    /// the written sectors).
    LogRot(u64),
}

/// What a partition cuts off a set of nodes from every other host (the writers included).
#[derive(Clone, Copy, Debug)]
pub(super) enum Cut {
    /// Nothing gets through, either way.
    Both,
    /// The nodes hear everyone but nothing they send arrives.
    Outgoing,
    /// What the nodes send arrives but they hear nothing.
    Incoming,
}

/// Cuts power to nodes and resets connections while the workload runs; with `partitions`
/// cuts off a node or an AZ (both ways or one way) for a while; with `disk` fails syncs
/// and metadata saves. At most two nodes are down, cut off or broken by a failed sync at
/// once (a write quorum of four stays).
pub(super) async fn faults(
    net: Rc<SimNet>,
    seed: u64,
    (partitions, disk): (bool, bool),
    stop: Rc<Cell<bool>>,
) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    // Disk faults draw from their own stream, so the other faults of a seed stay the same.
    let mut disk_rng = Rng::new(seed ^ 0xd15c);
    let mut down: Vec<(u32, SimDisk, PageStore, u32)> = Vec::new();
    // The nodes cut off now, and for how many more fault ticks.
    let mut cut_off: Option<(Vec<u32>, u32)> = None;
    // Nodes whose hot log or page store failed a sync (they fail closed until a restart),
    // and the fault ticks until their operator restarts them.
    let mut broken: Vec<(u32, u32)> = Vec::new();
    // Nodes whose hot log has rotted somewhere (at most one, so five good copies stay).
    let mut rotted: Vec<u32> = Vec::new();
    while !stop.get() {
        glommio::timer::sleep(Duration::from_millis(2 + rng.below(15))).await;
        let id = 1 + rng.below(u64::from(NODES)) as u32;
        let unavailable = down.len() + broken.len() + cut_off.as_ref().map_or(0, |(n, _)| n.len());
        let is_cut_off = |id: u32| cut_off.as_ref().is_some_and(|(n, _)| n.contains(&id));
        let is_broken = |id: u32| broken.iter().any(|(b, _)| *b == id);
        match rng.below(10) {
            0..=4 if net.is_up(id) => net.reset_one_link(id, rng.next_u64()),
            5 | 6 if unavailable < 2 && net.is_up(id) && !is_cut_off(id) && !is_broken(id) => {
                if let Some((disk, pages)) = net.cut_power(id) {
                    down.push((id, disk, pages, 2 + rng.below(10) as u32));
                }
            }
            7 if partitions && cut_off.is_none() => {
                // A node, or (when nothing is down) both nodes of the node's AZ.
                let whole_az = down.is_empty() && rng.below(2) == 0;
                let nodes = if whole_az {
                    let first = (id - 1) / 2 * 2 + 1;
                    vec![first, first + 1]
                } else {
                    vec![id]
                };
                if nodes.len() + down.len() + broken.len() <= 2
                    && nodes.iter().all(|n| net.is_up(*n) && !is_broken(*n))
                {
                    let how = [Cut::Both, Cut::Outgoing, Cut::Incoming][rng.below(3) as usize];
                    net.partition(&nodes, how);
                    cut_off = Some((nodes, 2 + rng.below(12) as u32));
                }
            }
            _ => {}
        }
        if disk && disk_rng.below(4) == 0 {
            let id = 1 + disk_rng.below(u64::from(NODES)) as u32;
            let unavailable =
                down.len() + broken.len() + cut_off.as_ref().map_or(0, |(n, _)| n.len());
            match disk_rng.below(4) {
                0 | 1
                    if unavailable < 2
                        && net.is_up(id)
                        && !cut_off.as_ref().is_some_and(|(n, _)| n.contains(&id))
                        && !broken.iter().any(|(b, _)| *b == id) =>
                {
                    let what = if disk_rng.below(2) == 0 {
                        DiskFault::LogSync
                    } else {
                        DiskFault::PageSync
                    };
                    net.disk_fault(id, what);
                    broken.push((id, 2 + disk_rng.below(8) as u32));
                }
                2 if net.is_up(id) => {
                    let full = disk_rng.below(2) == 0;
                    net.disk_fault(id, DiskFault::MetaSave { full });
                }
                3 if unavailable < 2
                    && net.is_up(id)
                    && rotted.is_empty()
                    && !cut_off.as_ref().is_some_and(|(n, _)| n.contains(&id))
                    && !broken.iter().any(|(b, _)| *b == id) =>
                {
                    // Bit rot in a sector the hot log wrote, on one node for the run; the
                    // node restarts a few ticks later, so its recovery reads the rot.
                    net.disk_fault(id, DiskFault::LogRot(disk_rng.next_u64()));
                    rotted.push(id);
                    broken.push((id, 1 + disk_rng.below(4) as u32));
                }
                _ => {}
            }
        }
        // Nodes come back, and partitions heal, after a few fault ticks.
        let mut i = 0;
        while i < broken.len() {
            broken[i].1 = broken[i].1.saturating_sub(1);
            if broken[i].1 == 0 {
                let (id, _) = broken.remove(i);
                net.restart(id).await?;
            } else {
                i += 1;
            }
        }
        if let Some((_, ticks)) = cut_off.as_mut() {
            *ticks = ticks.saturating_sub(1);
            if *ticks == 0 {
                net.heal();
                cut_off = None;
            }
        }
        let mut i = 0;
        while i < down.len() {
            down[i].3 = down[i].3.saturating_sub(1);
            if down[i].3 == 0 {
                let (id, disk, pages, _) = down.remove(i);
                net.start_node(id, disk, pages).await?;
            } else {
                i += 1;
            }
        }
    }
    if cut_off.is_some() {
        net.heal();
    }
    for (id, _) in broken {
        net.restart(id).await?;
    }
    for (id, disk, pages, _) in down {
        net.start_node(id, disk, pages).await?;
    }
    Ok(())
}
