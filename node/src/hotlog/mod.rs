//! A shard's hot log: redo entries appended to a ring of preallocated files with group
//! commit; an append completes once its block *and every earlier block* are durable, which
//! is exactly what recovery can find.
//!
//! ```text
//!  connection tasks ──append(entries)──▶ queue ──▶ writer task ──▶ block (one DMA buffer)
//!        ▲                                           │ ring.place()      │ write_at + sync
//!        │                                           ▼                   ▼  (≤ N in flight)
//!        └──── completion ◀── on_durable(records) ◀── ring.complete(seq): contiguous run
//! ```
//! While writes are in flight the queue fills; the next block takes everything that fits,
//! so a burst shares one write and one `fdatasync` without any timer.
//!
//! Modules: [`format`] (block bytes), [`scan`] (recovery), [`ring`] (placement and
//! durability order, sans-IO).

pub mod cache;
pub mod format;
pub mod ring;
pub mod scan;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use cache::BlockCache;
use hexad_client::wire::codec::Reader;
use hexad_client::wire::{PageLink, Record};
use hexad_client::{Lsn, MembershipEpoch, PageNo, VolumeEpoch};

use crate::disk::Disk;
use format::{align_up, BlockBuilder, Entry, RecordLoc, SegmentKey, BLOCK_ALIGN};
use hexad_client::sync::{oneshot, Notify, Sender};
use ring::{Full, Ring};
use scan::{Recovery, Scanner};

/// Most bytes one read of [`HotLog::read_records`] covers.
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// Bytes read per call while scanning the log at startup.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
pub struct HotLogConfig {
    /// Largest block; a multiple of 4 KiB that holds at least the largest entry.
    pub max_block_bytes: usize,
    /// Blocks written (and synced) concurrently.
    pub max_writes_in_flight: usize,
    /// Bytes of entries waiting for a block; appends wait while it is full.
    pub max_queue_bytes: usize,
    /// Newest blocks kept in memory for reading records back ([`cache`]); 0: none.
    pub cache_bytes: usize,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error(transparent)]
    Full(#[from] Full),
    #[error("hot log failed and accepts no more writes: {0}")]
    Failed(String),
    #[error("record at file {file} offset {offset} is unreadable: {detail}")]
    BadRecord {
        file: u32,
        offset: u64,
        detail: String,
    },
}

/// A record that became durable, with where it sits.
#[derive(Debug, Clone, Copy)]
pub struct DurableRecord {
    pub segment: SegmentKey,
    pub volume_epoch: VolumeEpoch,
    pub membership_epoch: MembershipEpoch,
    pub lsn: Lsn,
    pub prev_lsn_pg: Lsn,
    pub page_link: PageLink,
    /// The record ends a mini-transaction.
    pub cpl: bool,
    pub page: PageNo,
    pub loc: RecordLoc,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct HotLogStats {
    pub blocks_written: u64,
    pub bytes_written: u64,
    pub syncs: u64,
}

type Completion = Sender<Result<(), LogError>>;
/// Called with each run of records that became durable, in log order.
pub type OnDurable = Box<dyn FnMut(&[DurableRecord])>;

struct Queued {
    entry: Entry,
    /// Set on the last entry of an append.
    done: Option<Completion>,
}

struct InFlight {
    records: Vec<DurableRecord>,
    done: Vec<Completion>,
}

pub struct HotLog<D: Disk> {
    disk: D,
    cfg: HotLogConfig,
    ring: RefCell<Ring>,
    queue: RefCell<VecDeque<Queued>>,
    queue_bytes: Cell<usize>,
    /// Wakes the writer: entries queued, a write finished.
    writer_wake: Notify,
    /// Wakes appenders waiting for queue room.
    room: Notify,
    in_flight: Cell<usize>,
    blocks: RefCell<BTreeMap<u64, InFlight>>,
    failed: RefCell<Option<String>>,
    stats: Cell<HotLogStats>,
    on_durable: RefCell<OnDurable>,
    cache: RefCell<BlockCache>,
}

impl<D: Disk + 'static> HotLog<D> {
    /// Scans `disk`, makes what it found durable, and returns the log ready to append after
    /// it, with the recovered records. `on_durable` is called, in log order, with every
    /// batch of records that becomes durable, before their appends complete.
    pub async fn open(
        disk: D,
        cfg: HotLogConfig,
        on_durable: OnDurable,
    ) -> io::Result<(Rc<HotLog<D>>, Recovery)> {
        assert!(
            cfg.max_block_bytes.is_multiple_of(BLOCK_ALIGN)
                && cfg.max_block_bytes as u64 <= disk.file_bytes()
        );
        assert!(cfg.max_writes_in_flight >= 1);
        let mut scanner = Scanner::new(disk.file_count() as usize);
        for file in 0..disk.file_count() {
            let mut data = Vec::with_capacity(disk.file_bytes() as usize);
            let mut at = 0u64;
            while at < disk.file_bytes() {
                let want = SCAN_CHUNK_BYTES.min((disk.file_bytes() - at) as usize);
                let chunk = disk.read_at(file, at, want).await?;
                if chunk.is_empty() {
                    break;
                }
                data.extend_from_slice(&chunk);
                at += chunk.len() as u64;
            }
            scanner.scan_file(file, &data);
        }
        // Whatever the scan found may still sit in a volatile cache after a process crash:
        // make it durable before acknowledging anything that builds on it.
        for file in 0..disk.file_count() {
            disk.sync_always(file).await?;
        }
        let recovery = scanner.finish();
        let ring = Ring::from_tail(
            &recovery.tail,
            recovery.file_max_seq.clone(),
            disk.file_bytes(),
        );
        let log = Rc::new(HotLog {
            disk,
            cfg,
            ring: RefCell::new(ring),
            queue: RefCell::new(VecDeque::new()),
            queue_bytes: Cell::new(0),
            writer_wake: Notify::default(),
            room: Notify::default(),
            in_flight: Cell::new(0),
            blocks: RefCell::new(BTreeMap::new()),
            failed: RefCell::new(None),
            stats: Cell::new(HotLogStats::default()),
            on_durable: RefCell::new(on_durable),
            cache: RefCell::new(BlockCache::new(cfg.cache_bytes)),
        });
        Ok((log, recovery))
    }

    /// The writer task; spawn it once on the shard's executor.
    pub async fn run_writer(self: Rc<Self>) {
        loop {
            while self.queue.borrow().is_empty()
                || self.in_flight.get() >= self.cfg.max_writes_in_flight
            {
                if self.failed.borrow().is_some() {
                    return;
                }
                self.writer_wake.notified().await;
            }
            self.write_next_block();
        }
    }

    /// Appends `entries` and waits until they are durable.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), LogError> {
        assert!(!entries.is_empty());
        let bytes: usize = entries.iter().map(Entry::encoded_len).sum();
        loop {
            if let Some(why) = self.failed.borrow().as_ref() {
                return Err(LogError::Failed(why.clone()));
            }
            if self.queue_bytes.get() == 0
                || self.queue_bytes.get() + bytes <= self.cfg.max_queue_bytes
            {
                break;
            }
            self.room.notified().await;
        }
        let (tx, rx) = oneshot();
        let mut tx = Some(tx);
        let last = entries.len() - 1;
        {
            let mut q = self.queue.borrow_mut();
            for (i, entry) in entries.into_iter().enumerate() {
                let done = if i == last { tx.take() } else { None };
                q.push_back(Queued { entry, done });
            }
        }
        self.queue_bytes.set(self.queue_bytes.get() + bytes);
        self.writer_wake.notify();
        rx.await
            .unwrap_or_else(|| Err(LogError::Failed("the hot-log writer stopped".into())))
    }

    fn write_next_block(self: &Rc<Self>) {
        let mut buf = self.disk.alloc(self.cfg.max_block_bytes);
        let mut builder = BlockBuilder::new(buf.as_mut());
        let mut taken = Vec::new();
        {
            let mut q = self.queue.borrow_mut();
            while let Some(item) = q.front() {
                if !builder.fits(&item.entry) {
                    break;
                }
                let item = q.pop_front().expect("front exists");
                let at = builder.push(&item.entry);
                taken.push((item, at));
            }
        }
        assert!(
            !builder.is_empty(),
            "an entry larger than max_block_bytes was queued"
        );
        let freed: usize = taken.iter().map(|(q, _)| q.entry.encoded_len()).sum();
        self.queue_bytes.set(self.queue_bytes.get() - freed);
        self.room.notify();
        let span = align_up(builder.used_bytes());
        let placement = self.ring.borrow_mut().place(span as u64);
        let placement = match placement {
            Ok(p) => p,
            Err(full) => {
                // Space is released only by the shard (records stored in page versions,
                // which the shard's back-pressure waits for); the log itself cannot wait
                // here without blocking every later block, so fail these appends.
                let mut failed: Vec<Completion> =
                    taken.into_iter().filter_map(|(q, _)| q.done).collect();
                failed.extend(self.drain_queue());
                for tx in failed {
                    tx.send(Err(LogError::Full(full)));
                }
                return;
            }
        };
        let durable_seq = placement.durable_seq;
        builder.finish(
            placement.generation,
            placement.seq,
            durable_seq,
            placement.log_start_seq,
        );
        if self.cfg.cache_bytes > 0 {
            // Readers find records through the segments' index only once the block is
            // durable; until then nothing asks the cache for it.
            self.cache.borrow_mut().insert(
                placement.seq,
                placement.file,
                placement.offset,
                Bytes::copy_from_slice(&buf.as_ref()[..span]),
            );
        }
        let mut records = Vec::with_capacity(taken.len());
        let mut done = Vec::new();
        for (q, at) in taken {
            records.push(DurableRecord {
                segment: q.entry.segment,
                volume_epoch: q.entry.volume_epoch,
                membership_epoch: q.entry.membership_epoch,
                lsn: q.entry.record.lsn,
                prev_lsn_pg: q.entry.record.prev_lsn_pg,
                page_link: q.entry.record.page_link(),
                cpl: q.entry.record.cpl,
                page: q.entry.record.page,
                loc: RecordLoc {
                    file: placement.file,
                    offset: placement.offset + at as u64,
                    bytes: q.entry.record.encoded_len() as u32,
                },
            });
            done.extend(q.done);
        }
        self.blocks
            .borrow_mut()
            .insert(placement.seq, InFlight { records, done });
        self.in_flight.set(self.in_flight.get() + 1);
        let log = self.clone();
        glommio::spawn_local(async move {
            let result = async {
                log.disk
                    .write_at(placement.file, placement.offset, buf, span)
                    .await?;
                log.disk.sync(placement.file).await
            }
            .await;
            log.block_done(placement.seq, span, result);
        })
        .detach();
    }

    fn block_done(&self, seq: u64, span: usize, result: io::Result<()>) {
        self.in_flight.set(self.in_flight.get() - 1);
        self.writer_wake.notify();
        if self.failed.borrow().is_some() {
            // A block written at the same time failed first: nothing counts as durable
            // any more (even this block, written fine), and `fail` has answered every
            // append that was waiting. Without this, an earlier block finishing after a
            // later one failed found itself gone from `blocks` and panicked the node (the
            // cluster simulation's disk-faults plan).
            return;
        }
        if let Err(e) = result {
            self.fail(format!("write of block {seq} failed: {e}"));
            return;
        }
        let mut s = self.stats.get();
        s.blocks_written += 1;
        s.bytes_written += span as u64;
        s.syncs += 1;
        self.stats.set(s);
        let durable = self.ring.borrow_mut().complete(seq);
        for seq in durable {
            let block = self
                .blocks
                .borrow_mut()
                .remove(&seq)
                .expect("durable block was in flight");
            (self.on_durable.borrow_mut())(&block.records);
            for tx in block.done {
                tx.send(Ok(()));
            }
        }
    }

    /// Stops the log after an I/O error: nothing after the failed block can ever be
    /// acknowledged, since recovery might not find it.
    fn fail(&self, why: String) {
        eprintln!("hexad-node: hot log failed: {why}");
        *self.failed.borrow_mut() = Some(why);
        let why = self.failed.borrow().clone().expect("just set");
        let mut pending: Vec<Completion> = std::mem::take(&mut *self.blocks.borrow_mut())
            .into_values()
            .flat_map(|b| b.done)
            .collect();
        pending.extend(self.drain_queue());
        for tx in pending {
            tx.send(Err(LogError::Failed(why.clone())));
        }
        self.writer_wake.notify();
        self.room.notify();
    }

    fn drain_queue(&self) -> Vec<Completion> {
        let drained: Vec<Queued> = self.queue.borrow_mut().drain(..).collect();
        self.queue_bytes.set(0);
        self.room.notify();
        drained.into_iter().filter_map(|q| q.done).collect()
    }

    /// Reads records back and checks each: from the block cache where it holds them, else
    /// from the disk, where records close together in a file share one read of at most
    /// [`MAX_READ_BYTES`].
    pub async fn read_records(&self, locs: &[RecordLoc]) -> Vec<Result<Record, LogError>> {
        let mut out: Vec<Option<Result<Record, LogError>>> = {
            let cache = self.cache.borrow();
            locs.iter()
                .map(|&loc| cache.get(loc).map(|raw| decode_record(raw, loc)))
                .collect()
        };
        let missed: Vec<usize> = (0..locs.len()).filter(|&i| out[i].is_none()).collect();
        if !missed.is_empty() {
            let from_disk: Vec<RecordLoc> = missed.iter().map(|&i| locs[i]).collect();
            for (i, read) in missed
                .into_iter()
                .zip(self.read_from_disk(&from_disk).await)
            {
                out[i] = Some(read);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every record was read"))
            .collect()
    }

    async fn read_from_disk(&self, locs: &[RecordLoc]) -> Vec<Result<Record, LogError>> {
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            let first = locs[i];
            let start = align_down(first.offset);
            let mut end = first.offset + u64::from(first.bytes);
            let mut j = i + 1;
            while j < locs.len() {
                let l = locs[j];
                let l_end = l.offset + u64::from(l.bytes);
                if l.file != first.file
                    || align_down(l.offset) > align_up(end as usize) as u64
                    || l.offset < start
                    || l_end - start > MAX_READ_BYTES
                {
                    break;
                }
                end = end.max(l_end);
                j += 1;
            }
            let len = align_up((end - start) as usize);
            match self.disk.read_at(first.file, start, len).await {
                Ok(data) => {
                    for &loc in &locs[i..j] {
                        out.push(decode_at(&data, start, loc));
                    }
                }
                Err(e) => {
                    for &loc in &locs[i..j] {
                        out.push(Err(LogError::BadRecord {
                            file: loc.file,
                            offset: loc.offset,
                            detail: e.to_string(),
                        }));
                    }
                }
            }
            i = j;
        }
        out
    }

    /// Releases the oldest files whose records `unused(file)` says are no longer needed
    /// (the next block written records it; see `ring.rs`).
    pub fn release_unused(&self, unused: impl Fn(u32) -> bool) {
        self.ring.borrow_mut().release_unused(unused);
    }

    /// Files the writer can still move into; 0 means the next file change would fail with
    /// `Full`.
    pub fn files_free(&self) -> u32 {
        self.ring.borrow().files_free()
    }

    pub fn file_count(&self) -> u32 {
        self.ring.borrow().file_count()
    }

    pub fn stats(&self) -> HotLogStats {
        self.stats.get()
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }
}

fn align_down(offset: u64) -> u64 {
    offset / BLOCK_ALIGN as u64 * BLOCK_ALIGN as u64
}

/// Decodes the record at `loc` from `data`, which holds the file from offset `start`.
fn decode_at(data: &[u8], start: u64, loc: RecordLoc) -> Result<Record, LogError> {
    let bad = |detail: String| LogError::BadRecord {
        file: loc.file,
        offset: loc.offset,
        detail,
    };
    let from = (loc.offset - start) as usize;
    let to = from + loc.bytes as usize;
    if data.len() < to {
        return Err(bad(format!(
            "short read: {} bytes, record ends at {to}",
            data.len()
        )));
    }
    decode_record(Bytes::copy_from_slice(&data[from..to]), loc)
}

/// Decodes (and checks) the record whose exact bytes are `raw`, read from `loc`.
fn decode_record(raw: Bytes, loc: RecordLoc) -> Result<Record, LogError> {
    Record::decode(&mut Reader::new(raw, "hot-log record")).map_err(|e| LogError::BadRecord {
        file: loc.file,
        offset: loc.offset,
        detail: e.to_string(),
    })
}
