//! The batches a shard has taken but not yet made durable, per segment and epoch: the
//! epoch checks of `AppendBatch` count them as held (a new epoch must not overtake an
//! older batch still being written).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use hexad_client::VolumeEpoch;

use crate::hotlog::format::SegmentKey;

/// Per segment, the epochs of the batches being written and how many of each.
pub(super) type Appending = RefCell<HashMap<SegmentKey, BTreeMap<VolumeEpoch, u32>>>;

/// A batch being written, counted in `Shard::appending` until it is dropped (also when
/// its request is): then it is durable or failed.
pub(super) struct InFlight<'a> {
    appending: &'a Appending,
    key: SegmentKey,
    epoch: VolumeEpoch,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(appending: &'a Appending, key: SegmentKey, epoch: VolumeEpoch) -> Self {
        *appending
            .borrow_mut()
            .entry(key)
            .or_default()
            .entry(epoch)
            .or_default() += 1;
        InFlight {
            appending,
            key,
            epoch,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut appending = self.appending.borrow_mut();
        let Some(epochs) = appending.get_mut(&self.key) else {
            return;
        };
        if let Some(n) = epochs.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                epochs.remove(&self.epoch);
            }
        }
        if epochs.is_empty() {
            appending.remove(&self.key);
        }
    }
}
