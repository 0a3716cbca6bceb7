//! The volume-open requests a shard answers (DESIGN §7, FORMAT.md §3): `Fence` (look at,
//! raise, or exclusively raise a segment's volume epoch) and `Truncate` (persist a
//! truncation range and drop what it annuls). Both are made durable in `segments.meta`
//! before they are answered or take effect.

use hexad_client::wire::{ErrorCode, FenceMode, Message, SegmentView, Truncation};
use hexad_client::{VolumeEpoch, VolumeId};

use crate::disk::Disk;
use crate::hotlog::format::SegmentKey;
use crate::meta::MAX_TRUNCATIONS;
use crate::reply::{stale_epoch, Reply};
use crate::segment::Segment;
use crate::shard::Shard;

impl<D: Disk + 'static> Shard<D> {
    pub(crate) async fn fence(
        &self,
        key: SegmentKey,
        epoch: VolumeEpoch,
        mode: FenceMode,
    ) -> Reply {
        if mode == FenceMode::Look {
            let mut view = self
                .segments
                .borrow()
                .get(&key)
                .map(view_of)
                .unwrap_or_default();
            view.writer_vdl = self.writer_vdl(key.volume).max(view.writer_vdl);
            return Reply::ok(Message::FenceOk {
                volume: key.volume,
                pg: key.pg,
                view,
            });
        }
        // Compare with the epoch being made durable too, so that two opens racing for the
        // same epoch cannot both win here.
        let mut meta = self.meta_entry(key);
        let held = meta.volume_epoch.max(self.volume_fence(key.volume));
        if mode == FenceMode::Volume {
            return self.fence_volume(key, epoch, held).await;
        }
        let refused = match mode {
            FenceMode::Exclusive => held >= epoch,
            _ => held > epoch,
        };
        if refused {
            return stale_epoch(key, epoch, held);
        }
        let made_durable = if meta.volume_epoch < epoch {
            meta.volume_epoch = epoch;
            self.persist(key, meta).await
        } else {
            // The epoch may be another request's change still being saved.
            self.meta_durable().await
        };
        if let Err(reply) = made_durable {
            return reply;
        }
        // Durable: now the segment refuses older writers.
        let mut segs = self.segments.borrow_mut();
        let seg = segs.entry(key).or_insert_with(|| Segment::new(key));
        seg.observe_epoch(epoch);
        let mut view = view_of(seg);
        view.writer_vdl = self.writer_vdl(key.volume).max(view.writer_vdl);
        Reply::ok(Message::FenceOk {
            volume: key.volume,
            pg: key.pg,
            view,
        })
    }

    /// The epoch below which no segment of `volume` on this shard takes a request.
    pub(crate) fn volume_fence(&self, volume: VolumeId) -> VolumeEpoch {
        self.meta
            .borrow()
            .volumes
            .get(&volume)
            .copied()
            .unwrap_or_default()
    }

    /// `Fence` mode `Volume`: raise the volume-wide epoch (durably, then in effect).
    async fn fence_volume(&self, key: SegmentKey, epoch: VolumeEpoch, held: VolumeEpoch) -> Reply {
        if held > epoch {
            return stale_epoch(key, epoch, held);
        }
        let made_durable = if self.volume_fence(key.volume) < epoch {
            self.persist_with(|m| {
                let e = m.volumes.entry(key.volume).or_default();
                *e = (*e).max(epoch);
            })
            .await
        } else {
            self.meta_durable().await
        };
        if let Err(reply) = made_durable {
            return reply;
        }
        let view = self
            .segments
            .borrow()
            .get(&key)
            .map(view_of)
            .unwrap_or_default();
        Reply::ok(Message::FenceOk {
            volume: key.volume,
            pg: key.pg,
            view,
        })
    }

    pub(crate) async fn truncate(&self, key: SegmentKey, t: Truncation) -> Reply {
        let mut meta = self.meta_entry(key);
        let held = meta.volume_epoch.max(self.volume_fence(key.volume));
        if t.epoch < held {
            return stale_epoch(key, t.epoch, held);
        }
        let held_count = meta.truncations.len();
        match meta.truncations.iter_mut().find(|h| h.epoch == t.epoch) {
            Some(held) if !held.same_range(&t) => {
                return Reply::error(
                    ErrorCode::Internal,
                    0,
                    format!(
                    "volume {} pg {}: epoch {} already truncated ({}, {}] here; refusing ({}, {}]",
                    key.volume, key.pg, t.epoch, held.start, held.end, t.start, t.end
                ),
                )
            }
            Some(held) => held.sealed |= t.sealed,
            None if held_count >= MAX_TRUNCATIONS => {
                return Reply::error(
                    ErrorCode::Internal,
                    0,
                    format!(
                        "volume {} pg {}: {MAX_TRUNCATIONS} truncation ranges held already",
                        key.volume, key.pg
                    ),
                )
            }
            None => meta.truncations.push(t),
        }
        meta.volume_epoch = t.epoch;
        if let Err(reply) = self.persist(key, meta).await {
            return reply;
        }
        // Durable: drop what the range annuls, and take the new epoch's records from now on.
        let mut segs = self.segments.borrow_mut();
        let seg = segs.entry(key).or_insert_with(|| Segment::new(key));
        if let Err(e) = seg.add_truncation(t) {
            return Reply::error(ErrorCode::Internal, 0, e);
        }
        Reply::ok(Message::TruncateAck {
            volume: key.volume,
            pg: key.pg,
            scl: seg.scl(),
        })
    }
}

fn view_of(seg: &Segment) -> SegmentView {
    let (latest, sealed) = seg.latest_truncations();
    SegmentView {
        exists: true,
        volume_epoch: seg.volume_epoch,
        scl: seg.scl(),
        highest_lsn: seg.highest_lsn(),
        latest: latest.unwrap_or_default(),
        latest_sealed: sealed.unwrap_or_default(),
        // Records at or below the floor left memory (and maybe the log) once their pages
        // were stored up to the writer's PGMRPL, itself at or below a VDL the writer
        // reported: a volume open must start its walk there.
        writer_vdl: seg.floor(),
    }
}
