//! Making a shard's segment metadata (`segments.meta`) durable before a reply depends on
//! it: saves coalesce across the requests of one executor turn, and a failed save undoes
//! every change it carried.

use std::cell::Cell;
use std::rc::Rc;

use hexad_client::wire::ErrorCode;
use hexad_client::VolumeEpoch;

use super::Shard;
use crate::disk::Disk;
use crate::hotlog::format::SegmentKey;
use crate::meta::{MetaStore, SegmentMeta};
use crate::reply::Reply;

/// Whether a metadata change became durable; `None` until a save carried it.
pub(super) type MetaOutcome = Rc<Cell<Option<bool>>>;

fn persist_failed(detail: &dyn std::fmt::Display) -> Reply {
    Reply::error(
        ErrorCode::Io,
        0,
        format!("cannot persist segment metadata: {detail}"),
    )
}

impl<D: Disk + 'static> Shard<D> {
    /// A segment's metadata as it will be once every save under way is done.
    pub(crate) fn meta_entry(&self, key: SegmentKey) -> SegmentMeta {
        let seg_epoch = self
            .segments
            .borrow()
            .get(&key)
            .map_or(VolumeEpoch(0), |s| s.volume_epoch);
        let mut m = self
            .meta
            .borrow()
            .segments
            .get(&key)
            .cloned()
            .unwrap_or_default();
        m.volume_epoch = m.volume_epoch.max(seg_epoch);
        m
    }

    /// Makes `meta` durable for `key` before a reply depends on it. Saves coalesce: the
    /// request yields once, so every metadata change already queued on this shard rides
    /// the same file write and fsync (a volume open sends one per PG).
    pub(crate) async fn persist(&self, key: SegmentKey, meta: SegmentMeta) -> Result<(), Reply> {
        self.persist_all(vec![(key, meta)]).await
    }

    /// [`Shard::persist`] for several segments at once.
    pub(crate) async fn persist_all(
        &self,
        changes: Vec<(SegmentKey, SegmentMeta)>,
    ) -> Result<(), Reply> {
        self.persist_with(|m| m.segments.extend(changes)).await
    }

    /// Applies `change` to the metadata and makes it durable, as [`Shard::persist`]. If the
    /// save fails, every change it carried is undone in memory and each of their requests
    /// gets the error: nothing refused as undurable may still take effect.
    pub(crate) async fn persist_with(
        &self,
        change: impl FnOnce(&mut MetaStore),
    ) -> Result<(), Reply> {
        change(&mut self.meta.borrow_mut());
        let outcome: MetaOutcome = Rc::default();
        self.meta_waiting.borrow_mut().push(outcome.clone());
        futures_lite::future::yield_now().await;
        if outcome.get().is_none() {
            // No save carried this change yet: save everything made so far.
            let saved = self.meta.borrow_mut().save().map_err(|e| e.to_string());
            for waiting in self.meta_waiting.borrow_mut().drain(..) {
                waiting.set(Some(saved.is_ok()));
            }
            if let Err(e) = saved {
                return Err(persist_failed(&e));
            }
        }
        match outcome.get() {
            Some(true) => Ok(()),
            _ => Err(persist_failed(&"the save that carried this change failed")),
        }
    }

    /// Waits until every metadata change made so far is durable: a request that answers
    /// from the metadata without changing it may be looking at another request's change
    /// whose save is still to come, and may fail.
    pub(crate) async fn meta_durable(&self) -> Result<(), Reply> {
        if self.meta_waiting.borrow().is_empty() {
            return Ok(());
        }
        self.persist_with(|_| {}).await
    }
}
