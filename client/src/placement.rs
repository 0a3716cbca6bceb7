//! Where a segment lives: which 6 nodes hold a PG (2 in each of 3 AZs), and which shard of
//! a node owns a segment. Every client and node computes the same answer from the same
//! cluster file, with no metadata service.
//!
//! PG → nodes is rendezvous hashing: if a cluster has more than 3 AZs, the 3 AZs with the
//! highest score for `(volume, pg, az)` are used; inside each, the 2 nodes with the highest
//! score for `(volume, pg, node)`. Adding a node moves only the PGs it now wins.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::types::{NodeId, PgIndex, ShardId, VolumeId};

/// Nodes per PG, AZs per PG, nodes per AZ per PG.
pub const PG_MEMBERS: usize = 6;
pub const PG_AZS: usize = 3;
pub const NODES_PER_AZ: usize = 2;

/// A fixed 64-bit mix (splitmix64's finaliser): stable across builds and platforms, unlike
/// `std`'s randomly seeded hasher.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The shard of a node with `shard_count` shards that owns segment `(volume, pg)`.
pub fn segment_shard(volume: VolumeId, pg: PgIndex, shard_count: u16) -> ShardId {
    assert!(shard_count > 0, "a node has at least one shard");
    let h = mix64(mix64(volume.0) ^ u64::from(pg.0));
    ShardId((h % u64::from(shard_count)) as u16)
}

/// One `[[node]]` entry of a cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u32,
    pub az: String,
    pub addr: IpAddr,
    pub base_port: u16,
    /// Learned at handshake when omitted.
    pub shards: Option<u16>,
}

impl NodeEntry {
    pub fn shard_addr(&self, shard: ShardId) -> SocketAddr {
        SocketAddr::new(self.addr, self.base_port + shard.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("a PG needs nodes in {PG_AZS} AZs; the cluster has {found}: {azs:?}")]
    TooFewAzs { found: usize, azs: Vec<String> },
    #[error("AZ {az:?} has {found} node(s); every AZ needs at least {NODES_PER_AZ}")]
    TooFewNodesInAz { az: String, found: usize },
    #[error("node id {0} appears more than once")]
    DuplicateNode(u32),
}

/// The nodes of a cluster, grouped by AZ.
#[derive(Debug, Clone)]
pub struct ClusterMap {
    nodes: BTreeMap<NodeId, NodeEntry>,
    azs: BTreeMap<String, Vec<NodeId>>,
}

impl ClusterMap {
    pub fn new(entries: Vec<NodeEntry>) -> Result<ClusterMap, PlacementError> {
        let mut nodes = BTreeMap::new();
        let mut azs: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for e in entries {
            let id = NodeId(e.id);
            azs.entry(e.az.clone()).or_default().push(id);
            if nodes.insert(id, e).is_some() {
                return Err(PlacementError::DuplicateNode(id.0));
            }
        }
        if azs.len() < PG_AZS {
            return Err(PlacementError::TooFewAzs {
                found: azs.len(),
                azs: azs.keys().cloned().collect(),
            });
        }
        if let Some((az, ids)) = azs.iter().find(|(_, ids)| ids.len() < NODES_PER_AZ) {
            return Err(PlacementError::TooFewNodesInAz {
                az: az.clone(),
                found: ids.len(),
            });
        }
        Ok(ClusterMap { nodes, azs })
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(&id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// The 6 nodes holding `(volume, pg)`: 2 per AZ, AZs in name order.
    pub fn pg_members(&self, volume: VolumeId, pg: PgIndex) -> [NodeId; PG_MEMBERS] {
        let key = mix64(volume.0) ^ mix64(u64::from(pg.0).wrapping_add(0x51ed_270b));
        let mut azs: Vec<(&String, &Vec<NodeId>)> = self.azs.iter().collect();
        azs.sort_by_key(|(name, _)| std::cmp::Reverse(mix64(key ^ str_hash(name))));
        azs.truncate(PG_AZS);
        azs.sort_by_key(|(name, _)| *name);
        let mut out = [NodeId(0); PG_MEMBERS];
        for (i, (_, ids)) in azs.iter().enumerate() {
            let mut ranked: Vec<NodeId> = (*ids).clone();
            ranked.sort_by_key(|id| std::cmp::Reverse(mix64(key ^ mix64(u64::from(id.0)))));
            out[i * NODES_PER_AZ..(i + 1) * NODES_PER_AZ].copy_from_slice(&ranked[..NODES_PER_AZ]);
        }
        out
    }
}

/// FNV-1a of a string: stable, for hashing AZ names.
fn str_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, az: &str) -> NodeEntry {
        NodeEntry {
            id,
            az: az.into(),
            addr: IpAddr::from([127, 0, 0, 1]),
            base_port: 7000 + id as u16 * 10,
            shards: None,
        }
    }

    fn cluster(per_az: &[usize]) -> ClusterMap {
        let mut id = 0;
        let mut entries = Vec::new();
        for (a, n) in per_az.iter().enumerate() {
            for _ in 0..*n {
                id += 1;
                entries.push(entry(id, &format!("az{a}")));
            }
        }
        ClusterMap::new(entries).unwrap()
    }

    #[test]
    fn segment_shard_is_stable_and_spread() {
        // Pinned: changing the hash moves every segment, so it must not change silently.
        assert_eq!(segment_shard(VolumeId(1), PgIndex(0), 16), ShardId(13));
        assert_eq!(segment_shard(VolumeId(42), PgIndex(7), 4), ShardId(2));
        let mut counts = [0u32; 4];
        for pg in 0..4000 {
            counts[usize::from(segment_shard(VolumeId(7), PgIndex(pg), 4).0)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn two_distinct_nodes_per_az_in_three_azs() {
        let c = cluster(&[3, 4, 2, 5]);
        for pg in 0..500 {
            let m = c.pg_members(VolumeId(9), PgIndex(pg));
            let mut ids = m.to_vec();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 6, "{m:?}");
            let azs: Vec<&str> = m
                .iter()
                .map(|id| c.node(*id).unwrap().az.as_str())
                .collect();
            for pair in azs.chunks(2) {
                assert_eq!(pair[0], pair[1]);
            }
            assert!(azs[0] < azs[2] && azs[2] < azs[4]);
            assert_eq!(m, c.pg_members(VolumeId(9), PgIndex(pg)), "deterministic");
        }
    }

    #[test]
    fn load_spreads_over_nodes() {
        let c = cluster(&[4, 4, 4]);
        let mut per_node = BTreeMap::new();
        for pg in 0..3000 {
            for id in c.pg_members(VolumeId(1), PgIndex(pg)) {
                *per_node.entry(id).or_insert(0u32) += 1;
            }
        }
        // 3000 PGs x 6 segments over 12 nodes: 1500 each on average.
        assert!(
            per_node.values().all(|&n| (1200..1800).contains(&n)),
            "{per_node:?}"
        );
    }

    #[test]
    fn config_errors_are_clear() {
        let two_azs = vec![entry(1, "a"), entry(2, "a"), entry(3, "b"), entry(4, "b")];
        assert!(matches!(
            ClusterMap::new(two_azs),
            Err(PlacementError::TooFewAzs { found: 2, .. })
        ));
        let thin = vec![
            entry(1, "a"),
            entry(2, "a"),
            entry(3, "b"),
            entry(4, "b"),
            entry(5, "c"),
        ];
        let e = ClusterMap::new(thin).unwrap_err();
        assert_eq!(
            e,
            PlacementError::TooFewNodesInAz {
                az: "c".into(),
                found: 1
            }
        );
        assert!(e.to_string().contains("\"c\" has 1 node"));
        let dup = vec![entry(1, "a"), entry(1, "b")];
        assert_eq!(
            ClusterMap::new(dup).unwrap_err(),
            PlacementError::DuplicateNode(1)
        );
    }
}
