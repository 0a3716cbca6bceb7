//! `--target file:PATH`: the raw engine. Drives a file (or block device) directly through
//! `io_uring` with `O_DIRECT`, no hexad in the path, so a job run here can be set beside
//! fio's figure for the same job and beside hexad's own.
//!
//! Closed loop: `iodepth` slots, each with its own aligned buffer, each keeping one
//! operation in flight. With `--fdatasync N`, a slot that has completed its N-th write
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

use crate::write::Rw;

/// Buffer and offset alignment for `O_DIRECT` (the logical block size of `NVMe` and virtio
/// disks is 512 or 4096; 4096 works for both).
const ALIGN: usize = 4096;

/// What to run.
#[derive(Debug, Clone)]
pub struct RawJob {
    pub rw: Rw,
    pub bs: usize,
    pub iodepth: usize,
    pub size: u64,
    /// Sync after every N writes per slot (0: never).
    pub fdatasync: u64,
    pub runtime: Duration,
    pub ramp: Duration,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct RawSummary {
    pub target: String,
    pub rw: Rw,
    pub bs: usize,
    pub iodepth: usize,
    pub size: u64,
    pub fdatasync: u64,
    pub runtime_s: f64,
    pub ops: u64,
    pub iops: f64,
    pub mb_per_s: f64,
    pub syncs: u64,
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_p9999: u64,
    pub latency_us_max: u64,
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

#[derive(Clone, Copy)]
enum Pending {
    Io { started: Instant },
    Sync { started: Instant },
}

pub fn run(path: &Path, job: &RawJob) -> Result<(RawSummary, Histogram<u64>)> {
    if job.bs < ALIGN || !job.bs.is_multiple_of(ALIGN) {
        bail!(
            "--bs {} must be a multiple of {ALIGN} for the file target (O_DIRECT)",
            job.bs
        );
    }
    if job.rw == Rw::Mixed {
        bail!("--rw randrw is not built for the file target yet");
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
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut pending: Vec<Pending> = vec![
        Pending::Io {
            started: Instant::now()
        };
        job.iodepth
    ];
    let mut since_sync = vec![0u64; job.iodepth];
    let mut next_block = 0u64;
    let mut xorshift = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = || -> u64 {
        let b = match job.rw {
            Rw::Write | Rw::Read => {
                let b = next_block;
                next_block = (next_block + 1) % blocks;
                b
            }
            Rw::RandWrite | Rw::RandRead | Rw::Mixed => {
                xorshift ^= xorshift << 13;
                xorshift ^= xorshift >> 7;
                xorshift ^= xorshift << 17;
                xorshift % blocks
            }
        };
        b * job.bs as u64
    };
    let writes = !job.rw.reads();
    let submit_io =
        |ring: &mut IoUring, slot: usize, buf: &AlignedBuf, offset: u64| -> Result<()> {
            let len = u32::try_from(buf.layout.size()).expect("bs fits u32");
            let entry = if writes {
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
    let started = Instant::now();
    let measure_from = started + job.ramp;
    let end = measure_from + job.runtime;
    for (slot, buf) in bufs.iter().enumerate() {
        pending[slot] = Pending::Io {
            started: Instant::now(),
        };
        submit_io(&mut ring, slot, buf, pick())?;
    }
    let (mut ops, mut syncs, mut in_flight) = (0u64, 0u64, job.iodepth);
    let (mut last_report, mut ops_at_report) = (Instant::now(), 0u64);
    while in_flight > 0 {
        ring.submit_and_wait(1).context("io_uring_enter")?;
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        let now = Instant::now();
        for (slot, res) in done {
            if res < 0 {
                bail!(
                    "{} failed on {}: {}",
                    if matches!(pending[slot], Pending::Sync { .. }) {
                        "fdatasync"
                    } else {
                        "I/O"
                    },
                    path.display(),
                    std::io::Error::from_raw_os_error(-res)
                );
            }
            let finished_op = match pending[slot] {
                Pending::Io { started } => {
                    since_sync[slot] += 1;
                    if writes && job.fdatasync > 0 && since_sync[slot] >= job.fdatasync {
                        since_sync[slot] = 0;
                        pending[slot] = Pending::Sync { started };
                        submit_sync(&mut ring, slot)?;
                        continue;
                    }
                    Some(started)
                }
                Pending::Sync { started } => {
                    syncs += 1;
                    Some(started)
                }
            };
            if let Some(op_started) = finished_op {
                if op_started >= measure_from && now <= end {
                    let us = now.duration_since(op_started).as_micros() as u64;
                    hist.record(us.max(1)).expect("within bounds");
                    ops += 1;
                }
            }
            if now >= end {
                in_flight -= 1;
                continue;
            }
            pending[slot] = Pending::Io { started: now };
            submit_io(&mut ring, slot, &bufs[slot], pick())?;
        }
        if !job.quiet && last_report.elapsed() >= Duration::from_secs(1) {
            let secs = last_report.elapsed().as_secs_f64();
            let iops = (ops - ops_at_report) as f64 / secs;
            eprintln!(
                "[{:>4.0}s] {iops:>9.0} IOPS {:>8.1} MB/s p99 so far {} us",
                started.elapsed().as_secs_f64(),
                iops * job.bs as f64 / 1e6,
                hist.value_at_quantile(0.99)
            );
            last_report = Instant::now();
            ops_at_report = ops;
        }
    }
    drop(ring);
    let secs = job.runtime.as_secs_f64();
    let summary = RawSummary {
        target: format!("file:{}", path.display()),
        rw: job.rw,
        bs: job.bs,
        iodepth: job.iodepth,
        size: job.size,
        fdatasync: job.fdatasync,
        runtime_s: secs,
        ops,
        iops: ops as f64 / secs,
        mb_per_s: ops as f64 * job.bs as f64 / secs / 1e6,
        syncs,
        latency_us_p50: hist.value_at_quantile(0.5),
        latency_us_p90: hist.value_at_quantile(0.9),
        latency_us_p99: hist.value_at_quantile(0.99),
        latency_us_p999: hist.value_at_quantile(0.999),
        latency_us_p9999: hist.value_at_quantile(0.9999),
        latency_us_max: hist.max(),
    };
    Ok((summary, hist))
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
