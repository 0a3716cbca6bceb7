//! `--target file:PATH`: the raw engine. Drives a file (or block device) directly through
//! `io_uring` with `O_DIRECT`, no hexad in the path, so a job run here can be set beside
//! fio's figure for the same job and beside hexad's own.
//!
//! `iodepth` slots, each with its own aligned buffer, each keeping one operation in
//! flight: back to back (closed loop), or, with `--rate_iops`, each operation started at
//! its scheduled time and timed from it (open loop, as `drive.rs` does for hexad targets).
//! `--rw randrw` mixes reads and writes by `--rwmixread`, per operation. With `--fdatasync N`, a slot that has completed its N-th write
//! since the last sync issues an `fdatasync` (`IORING_FSYNC_DATASYNC`) before its next
//! write, and that write's latency runs to the sync's completion (what an application that
//! must be durable sees). A file shorter than `--size` is first laid out with zeros (and
//! synced), so writes overwrite allocated blocks, as fio's `--overwrite=1` does.
//!
//! This is the one module of the bench that uses `unsafe`: aligned DMA buffers and
//! handing their addresses to the kernel. Each use says why it is sound.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};
use serde::Serialize;

use crate::drive::Loaded;
use crate::write::Rw;

/// Buffer and offset alignment for `O_DIRECT` (the logical block size of `NVMe` and virtio
/// disks is 512 or 4096; 4096 works for both).
const ALIGN: usize = 4096;

/// What to run.
#[derive(Debug, Clone)]
pub struct RawJob {
    pub rw: Rw,
    /// Percent reads of a randrw job.
    pub mix_read: u8,
    pub bs: usize,
    pub iodepth: usize,
    pub size: u64,
    /// Sync after every N writes per slot (0: never).
    pub fdatasync: u64,
    pub runtime: Duration,
    pub ramp: Duration,
    /// Open loop at this many operations per second (at most `iodepth` in flight).
    pub rate_iops: Option<f64>,
    pub quiet: bool,
}

/// What the raw engine adds to the summary.
#[derive(Debug, Serialize)]
pub struct FileStats {
    pub size: u64,
    pub fdatasync: u64,
    pub syncs: u64,
}

/// One page-aligned, zeroed buffer that the kernel reads from or writes to.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, ALIGN).expect("valid layout");
        // SAFETY: `layout` has a non-zero size (bs ≥ 4096, checked by the caller).
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory for a {len}-byte buffer");
        AlignedBuf { ptr, layout }
    }

    fn fill(&mut self, byte: u8) {
        // SAFETY: `ptr` points to `layout.size()` bytes we own, and no I/O is in flight
        // on this buffer while we fill it (the caller fills before the first submission).
        unsafe { std::ptr::write_bytes(self.ptr, byte, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`; the ring that used it is gone.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Operation kinds, as the other targets number them.
const WRITE: usize = 0;
const READ: usize = 1;

/// What a slot has in flight: an operation of `kind` whose latency runs from `from` (its
/// start, or in open loop its scheduled time), in its I/O or its trailing sync.
#[derive(Clone, Copy)]
struct InFlight {
    kind: usize,
    from: Instant,
    syncing: bool,
}

/// Runs `job` on `path`; the histograms are in microseconds.
pub fn run(path: &Path, job: &RawJob) -> Result<(FileStats, Loaded)> {
    if job.bs < ALIGN || !job.bs.is_multiple_of(ALIGN) {
        bail!(
            "--bs {} must be a multiple of {ALIGN} for the file target (O_DIRECT)",
            job.bs
        );
    }
    if job.size < job.bs as u64 {
        bail!("--size must hold at least one block of --bs");
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
    layout(&file, path, job)?;
    let blocks = job.size / job.bs as u64;
    let mut ring = IoUring::new(
        u32::try_from(job.iodepth * 2)
            .unwrap_or(u32::MAX)
            .next_power_of_two(),
    )
    .context("setting up io_uring")?;
    let fd = types::Fd(file.as_raw_fd());
    let mut bufs: Vec<AlignedBuf> = (0..job.iodepth).map(|_| AlignedBuf::new(job.bs)).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(0x5a ^ i as u8);
    }
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut by_kind = [histogram(), histogram()];
    let mut interval = histogram();
    let mut intervals: Vec<crate::hdrlog::Interval> = Vec::new();
    let mut slots: Vec<Option<InFlight>> = vec![None; job.iodepth];
    let mut since_sync = vec![0u64; job.iodepth];
    let submit_io = |ring: &mut IoUring, slot: usize, write: bool, offset: u64| -> Result<()> {
        let buf = &bufs[slot];
        let len = u32::try_from(buf.layout.size()).expect("bs fits u32");
        let entry = if write {
            opcode::Write::new(fd, buf.ptr, len).offset(offset).build()
        } else {
            opcode::Read::new(fd, buf.ptr, len).offset(offset).build()
        }
        .user_data(slot as u64);
        // SAFETY: `buf` stays allocated and untouched until this slot's completion is
        // reaped (slots are reused only after their CQE), and `file` outlives the ring.
        unsafe { ring.submission().push(&entry) }.context("submission queue full")?;
        Ok(())
    };
    let submit_sync = |ring: &mut IoUring, slot: usize| -> Result<()> {
        let entry = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(slot as u64);
        // SAFETY: no buffer is involved; `file` outlives the ring.
        unsafe { ring.submission().push(&entry) }.context("submission queue full")?;
        Ok(())
    };
    let wall_start = std::time::SystemTime::now();
    let started = Instant::now();
    let measure_from = started + job.ramp;
    let end = measure_from + job.runtime;
    let mut cpu_start = None;
    // Operation k is due at `started + k / rate` in open loop.
    let due = |k: u64| {
        job.rate_iops
            .map(|r| started + Duration::from_secs_f64(k as f64 / r))
    };
    let (mut next_op, mut syncs, mut in_flight) = (0u64, 0u64, 0usize);
    let (mut interval_start, mut last_done) = (started, started);
    loop {
        // Start operations on free slots: closed loop at once, open loop when due.
        let now = Instant::now();
        if cpu_start.is_none() && now >= measure_from {
            cpu_start = Some(crate::cpu::NodeCpu::None.sample());
        }
        for (slot, state) in slots.iter_mut().enumerate() {
            if state.is_some() {
                continue;
            }
            let from = due(next_op).unwrap_or(now);
            if from > now || from >= end {
                break;
            }
            let kind = if job.rw.is_read(next_op, job.mix_read) {
                READ
            } else {
                WRITE
            };
            let offset = job.rw.pick(next_op, blocks) * job.bs as u64;
            submit_io(&mut ring, slot, kind == WRITE, offset)?;
            *state = Some(InFlight {
                kind,
                from,
                syncing: false,
            });
            next_op += 1;
            in_flight += 1;
        }
        let next_due = due(next_op).unwrap_or(now);
        if in_flight == 0 {
            if next_due >= end {
                break;
            }
            ring.submit().context("io_uring_enter")?;
            std::thread::sleep(next_due.saturating_duration_since(Instant::now()));
            continue;
        }
        let slot_free = in_flight < job.iodepth;
        if slot_free && next_due > now && next_due < end {
            // Open loop: wake for a completion or for the next operation's due time.
            let ts = types::Timespec::from(next_due - now);
            let args = types::SubmitArgs::new().timespec(&ts);
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e).context("io_uring_enter"),
            }
        } else {
            ring.submit_and_wait(1).context("io_uring_enter")?;
        }
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        let now = Instant::now();
        for (slot, res) in done {
            let op = slots[slot].expect("a completion for a slot in flight");
            if res < 0 {
                bail!(
                    "{} failed on {}: {}",
                    if op.syncing { "fdatasync" } else { "I/O" },
                    path.display(),
                    std::io::Error::from_raw_os_error(-res)
                );
            }
            if op.syncing {
                syncs += 1;
            } else if op.kind == WRITE && job.fdatasync > 0 {
                since_sync[slot] += 1;
                if since_sync[slot] >= job.fdatasync {
                    since_sync[slot] = 0;
                    slots[slot] = Some(InFlight {
                        syncing: true,
                        ..op
                    });
                    submit_sync(&mut ring, slot)?;
                    continue;
                }
            }
            if op.from >= measure_from {
                let us = (now.duration_since(op.from).as_micros() as u64).max(1);
                by_kind[op.kind].record(us).expect("within bounds");
                interval.record(us).expect("within bounds");
                last_done = now;
            }
            slots[slot] = None;
            in_flight -= 1;
        }
        if now.duration_since(interval_start) >= Duration::from_secs(1) {
            let len = now.duration_since(interval_start);
            let h = std::mem::replace(&mut interval, histogram());
            if interval_start >= measure_from {
                let iops = h.len() as f64 / len.as_secs_f64();
                if !job.quiet {
                    let mut so_far = by_kind[WRITE].clone();
                    so_far.add(&by_kind[READ])?;
                    eprintln!(
                        "[{:>4.0}s] {iops:>9.0} IOPS {:>8.1} MB/s  p99 {} us (last second), {} us (so far)",
                        started.elapsed().as_secs_f64(),
                        iops * job.bs as f64 / 1e6,
                        h.value_at_quantile(0.99),
                        so_far.value_at_quantile(0.99)
                    );
                }
                intervals.push((interval_start.duration_since(started), len, h));
            } else if !job.quiet {
                eprintln!(
                    "[{:>4.0}s] ramping (not measured)",
                    started.elapsed().as_secs_f64()
                );
            }
            interval_start = now;
        }
    }
    drop(ring);
    let cpu_end = crate::cpu::NodeCpu::None.sample();
    // The last, partial, second.
    if interval_start >= measure_from && !interval.is_empty() {
        intervals.push((
            interval_start.duration_since(started),
            interval_start.elapsed(),
            interval,
        ));
    }
    let mut latency_us = histogram();
    for h in &by_kind {
        latency_us.add(h)?;
    }
    let ops = latency_us.len();
    let loaded = Loaded {
        // An I/O error on the device ends the run (above): no operation fails quietly.
        errors: 0,
        first_error: None,
        ops,
        latency_us,
        by_kind: by_kind.into(),
        elapsed_s: last_done
            .max(end)
            .saturating_duration_since(measure_from)
            .as_secs_f64(),
        wall_start,
        intervals,
        cpu: crate::cpu::CpuUse::between(cpu_start.unwrap_or(cpu_end), cpu_end, ops),
    };
    let stats = FileStats {
        size: job.size,
        fdatasync: job.fdatasync,
        syncs,
    };
    Ok((stats, loaded))
}

/// Extends the file to `size` with zeros (written and synced) so the job overwrites
/// allocated blocks; a block device or a file already that long is left alone.
fn layout(file: &File, path: &Path, job: &RawJob) -> Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() >= job.size {
        return Ok(());
    }
    if !job.quiet {
        eprintln!(
            "laying out {} to {} MiB with zeros (once)",
            path.display(),
            job.size >> 20
        );
    }
    let chunk = 1usize << 20;
    let buf = AlignedBuf::new(chunk);
    let mut ring = IoUring::new(8).context("setting up io_uring")?;
    let fd = types::Fd(file.as_raw_fd());
    let mut offset = meta.len() / chunk as u64 * chunk as u64;
    while offset < job.size {
        let len = chunk.min(usize::try_from(job.size - offset).unwrap_or(chunk));
        let len = len.div_ceil(ALIGN) * ALIGN;
        let entry = opcode::Write::new(fd, buf.ptr, u32::try_from(len).expect("≤ 1 MiB"))
            .offset(offset)
            .build();
        // SAFETY: `buf` outlives this synchronous submit-and-wait; `file` outlives `ring`.
        unsafe { ring.submission().push(&entry) }.context("submission queue full")?;
        ring.submit_and_wait(1).context("io_uring_enter")?;
        let res = ring.completion().next().map_or(-libc::EIO, |c| c.result());
        if res < 0 {
            bail!(
                "laying out {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(-res)
            );
        }
        offset += len as u64;
    }
    file.sync_all().context("syncing the laid-out file")?;
    Ok(())
}
