//! Reader slots: the node's half of the limit on read-only attachments (DESIGN §6).
//!
//! A volume has [`MAX_READERS`] slots. A reader claims one on every segment of PG 0 and
//! holds it once 4 of the 6 granted it; since two sets of 4 among 6 always share a node,
//! and a node grants a slot to one reader at a time, no two readers hold the same slot. A
//! grant is a lease of [`READER_LEASE`]: the reader renews it well before it runs out, and a
//! reader that vanished frees its slot when it does. Slots live in memory only: after a
//! restart a node grants freely, and the other nodes' grants still keep the count (a
//! slot's holder keeps at least 3 of its grants while only one node restarts, which leaves
//! no 4 for anyone else).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hexad_client::wire::{ErrorCode, Message};
use hexad_client::{VolumeId, MAX_READERS};

use crate::disk::Disk;
use crate::reply::Reply;
use crate::shard::Shard;

/// How long a grant lasts without a renewal.
pub const READER_LEASE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct ReaderSlots {
    volumes: HashMap<VolumeId, [Option<(u64, Instant)>; MAX_READERS]>,
}

impl ReaderSlots {
    /// Grants `slot` of `volume` to `reader` (or, with `release`, gives it back if `reader`
    /// holds it) and returns who holds it afterwards (0: nobody). A slot whose lease ran
    /// out counts as free.
    pub fn claim(
        &mut self,
        volume: VolumeId,
        reader: u64,
        slot: u32,
        release: bool,
        now: Instant,
    ) -> Result<u64, String> {
        if reader == 0 {
            return Err("reader id 0 is reserved for a free slot".into());
        }
        let Some(held) = self
            .volumes
            .entry(volume)
            .or_insert([None; MAX_READERS])
            .get_mut(slot as usize)
        else {
            return Err(format!(
                "reader slot {slot} does not exist: a volume has {MAX_READERS} (0..{})",
                MAX_READERS - 1
            ));
        };
        let holder = held.filter(|(_, until)| *until > now).map(|(r, _)| r);
        *held = match (holder, release) {
            (Some(r), true) if r == reader => None,
            (Some(r), _) if r != reader => *held,
            (_, true) => None,
            _ => Some((reader, now + READER_LEASE)),
        };
        Ok(held.map_or(0, |(r, _)| r))
    }
}

impl<D: Disk + 'static> Shard<D> {
    /// `ClaimReaderSlot`, on the shard that serves the volume's PG 0.
    pub(crate) fn claim_reader_slot(
        &self,
        volume: VolumeId,
        reader: u64,
        slot: u32,
        release: bool,
    ) -> Reply {
        let now = self.clock.now();
        match self
            .readers
            .borrow_mut()
            .claim(volume, reader, slot, release, now)
        {
            Ok(holder) => Reply::ok(Message::ReaderSlot {
                volume,
                slot,
                holder,
                lease_ms: READER_LEASE.as_millis() as u32,
            }),
            Err(why) => Reply::error(ErrorCode::Malformed, 0, why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: VolumeId = VolumeId(3);

    #[test]
    fn a_slot_has_one_holder_until_released_or_its_lease_ends() {
        let mut slots = ReaderSlots::default();
        let t = Instant::now();
        assert_eq!(slots.claim(V, 7, 0, false, t), Ok(7));
        assert_eq!(slots.claim(V, 8, 0, false, t), Ok(7), "held by 7");
        assert_eq!(
            slots.claim(V, 8, 0, true, t),
            Ok(7),
            "8 cannot release 7's slot"
        );
        assert_eq!(
            slots.claim(VolumeId(4), 8, 0, false, t),
            Ok(8),
            "per volume"
        );
        // A renewal extends the lease.
        let later = t + READER_LEASE.saturating_sub(Duration::from_secs(1));
        assert_eq!(slots.claim(V, 7, 0, false, later), Ok(7));
        assert_eq!(slots.claim(V, 8, 0, false, t + READER_LEASE), Ok(7));
        assert_eq!(slots.claim(V, 8, 0, false, later + READER_LEASE), Ok(8));
        assert_eq!(slots.claim(V, 8, 0, true, later + READER_LEASE), Ok(0));
        assert_eq!(slots.claim(V, 9, 0, false, later + READER_LEASE), Ok(9));
    }

    #[test]
    fn bad_slots_and_reader_ids_are_refused() {
        let mut slots = ReaderSlots::default();
        let t = Instant::now();
        assert!(slots.claim(V, 7, MAX_READERS as u32, false, t).is_err());
        assert!(slots.claim(V, 0, 0, false, t).is_err());
    }
}
