//! The arithmetic of a volume open, apart from the network: which segments to trust, each
//! PG's PGCL and source, and the VCL/VDL walk over the fetched index (see the parent
//! module for the steps and why they are safe).

use std::collections::{BTreeMap, HashMap};

use super::SegmentReport;
use crate::types::{Lsn, NodeId, PgIndex, VolumeEpoch};
use crate::wire::{IndexEntry, SegmentView, Truncation};

/// The arithmetic of an open, apart from the network.
pub(super) struct OpenState {
    pub(super) base: Lsn,
    /// The newest sealed range: its LSNs were never allocated.
    pub(super) sealed: Option<Truncation>,
    pub(super) reports: BTreeMap<PgIndex, Vec<SegmentReport>>,
    pub(super) pgcl: BTreeMap<PgIndex, Lsn>,
    pub(super) source: BTreeMap<PgIndex, NodeId>,
    /// Index entries of the records above `base` up to each PG's PGCL, by LSN.
    pub(super) fetched: BTreeMap<Lsn, (PgIndex, IndexEntry)>,
    pub(super) tails: HashMap<PgIndex, Lsn>,
}

pub(super) fn compute(views: &BTreeMap<PgIndex, Vec<(NodeId, SegmentView)>>) -> OpenState {
    let all = views.values().flatten().map(|(_, v)| v);
    let newest = all
        .clone()
        .map(|v| v.latest)
        .max_by_key(|t| t.epoch)
        .unwrap_or_default();
    let sealed = all
        .map(|v| v.latest_sealed)
        .max_by_key(|t| t.epoch)
        .filter(|t| t.epoch > VolumeEpoch(0));
    // Every record at or below a VDL some writer reported is committed and on 4 of 6, as is
    // every record at or below a sealed range's start: either may serve as the base.
    let reported = views
        .values()
        .flatten()
        .map(|(_, v)| v.writer_vdl)
        .max()
        .unwrap_or_default();
    let base = sealed.map_or(Lsn::NONE, |t| t.start).max(reported);
    let mut reports = BTreeMap::new();
    let mut pgcl = BTreeMap::new();
    let mut source = BTreeMap::new();
    for (pg, vs) in views {
        let rs: Vec<SegmentReport> = vs
            .iter()
            .map(|(node, v)| SegmentReport {
                node: *node,
                view: *v,
                trusted_scl: if v.latest.epoch < newest.epoch {
                    v.scl.min(newest.start)
                } else {
                    v.scl
                },
            })
            .collect();
        let best = rs.iter().max_by_key(|r| r.trusted_scl);
        pgcl.insert(*pg, best.map_or(Lsn::NONE, |r| r.trusted_scl));
        if let Some(b) = best {
            source.insert(*pg, b.node);
        }
        reports.insert(*pg, rs);
    }
    OpenState {
        base,
        sealed,
        reports,
        pgcl,
        source,
        fetched: BTreeMap::new(),
        tails: HashMap::new(),
    }
}

impl OpenState {
    /// VCL: the end of the unbroken run of LSNs above `base` (records found, or the sealed
    /// range nobody allocated from). VDL: the highest CPL within it, else `base`.
    pub(super) fn walk(&mut self) -> (Lsn, Lsn) {
        let mut next = self.base.0 + 1;
        let mut vdl = self.base;
        let skip = |n: u64| match self.sealed {
            Some(t) if t.start.0 < n && n <= t.end.0 => t.end.0 + 1,
            _ => n,
        };
        for (lsn, (_, r)) in &self.fetched {
            next = skip(next);
            if lsn.0 != next {
                break;
            }
            if r.cpl {
                vdl = *lsn;
            }
            next += 1;
        }
        let vcl = Lsn(skip(next) - 1);
        self.fetched.retain(|l, _| *l <= vdl);
        (vcl, vdl)
    }

    /// The PG's tail as the fetched records show it, when they show it.
    pub(super) fn expected_tail(&self, pg: PgIndex) -> Option<Lsn> {
        let mine = self.fetched.iter().filter(|(_, (p, _))| *p == pg);
        mine.map(|(l, _)| *l).next_back()
    }
}
