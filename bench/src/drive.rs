//! The load loops, generic over one operation, so the same code drives a cluster and, in
//! tests, a fake target.
//!
//! - Closed loop: `depth` workers, each starting its next operation when the last ends.
//!   Latency runs from the actual start, so a stall delays the next sends and is seen only
//!   by the operations caught in it (coordinated omission).
//! - Open loop (`--rate_iops`): operation k is due at `start + k / rate`, whatever happened
//!   before; latency runs from that *scheduled* time, so every operation that should have
//!   started during a stall reports it. At most `max_in_flight` run at once; when that many
//!   are outstanding the next one waits, and its wait counts.
//!
//! Both run for `ramp + runtime` and measure only operations that start (or are due) after
//! the ramp (`--ramp_time`). A failed operation is counted (with the first failure kept
//! for the report) and the load goes on; a worker whose operation failed pauses
//! [`ERROR_PAUSE`] so a dead target is not hammered.
//!
//! Around them: [`measure`] (the live report and per-second histograms), [`on_executor`],
//! [`fill_pages`] (read jobs' prefill) and [`sum_stats`] (nodes' counters before and after).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

/// How long a worker waits after a failed operation before its next one.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long a load runs: `ramp` first, unmeasured, then `runtime`, measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub ramp: Duration,
    pub runtime: Duration,
}

/// One operation of a load: the `i`-th.
pub trait Operation {
    /// Runs operation `i`; returns which kind it was (an index below [`MAX_KINDS`], e.g.
    /// 0 = write, 1 = read), so latencies are kept per kind as well as overall.
    fn run(&self, i: u64) -> impl Future<Output = Result<usize>>;
}

/// What a loop measured (after the ramp).
/// Operation kinds an [`Operation`] may report.
pub const MAX_KINDS: usize = 4;

pub struct Measured {
    /// Microseconds, every operation.
    pub latency_us: Histogram<u64>,
    /// Microseconds, per kind of operation.
    pub by_kind: Vec<Histogram<u64>>,
    pub done: u64,
    /// Operations that failed (in the measured window), and the first failure.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("histogram")
}

/// What a running loop has measured so far, for the live report and interval logs.
#[derive(Default)]
pub struct Tally {
    /// Operations done in the measured window.
    pub done: Cell<u64>,
    /// Operations failed in the measured window, and the first failure (any time).
    pub errors: Cell<u64>,
    pub first_error: RefCell<Option<String>>,
    /// Latencies (µs) since the last [`Tally::take_interval`], if intervals are kept.
    interval: RefCell<Option<Histogram<u64>>>,
}

impl Tally {
    /// A tally that also keeps per-interval histograms.
    pub fn with_intervals() -> Tally {
        Tally {
            interval: RefCell::new(Some(histogram())),
            ..Tally::default()
        }
    }

    fn failed(&self, e: &anyhow::Error, measured: bool) {
        if measured {
            self.errors.set(self.errors.get() + 1);
        }
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            eprintln!("operation failed (the run goes on; errors are counted): {e:#}");
            *first = Some(format!("{e:#}"));
        }
    }

    fn record(&self, us: u64) {
        self.done.set(self.done.get() + 1);
        if let Some(h) = self.interval.borrow_mut().as_mut() {
            // `record`, not `saturating_record`: the histogram grows to fit (auto-resize),
            // while saturating would clamp at its initial top.
            let _ = h.record(us);
        }
    }

    /// The latencies since the last call (and starts a new interval).
    pub fn take_interval(&self) -> Option<Histogram<u64>> {
        self.interval
            .borrow_mut()
            .as_mut()
            .map(|h| std::mem::replace(h, histogram()))
    }
}

/// Closed loop: `depth` workers back to back until the window has passed.
pub async fn closed_loop<O: Operation + 'static>(
    op: Rc<O>,
    depth: usize,
    window: Window,
    tally: Rc<Tally>,
) -> Result<Measured> {
    let measure_from = Instant::now() + window.ramp;
    let deadline = measure_from + window.runtime;
    let mut workers = Vec::new();
    for w in 0..depth as u64 {
        let (op, tally) = (op.clone(), tally.clone());
        workers.push(glommio::spawn_local(async move {
            let mut kinds: Vec<Histogram<u64>> = (0..MAX_KINDS).map(|_| histogram()).collect();
            let mut i = w;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match op.run(i).await {
                    Ok(kind) if t0 >= measure_from => {
                        let us = t0.elapsed().as_micros() as u64;
                        kinds[kind.min(MAX_KINDS - 1)].record(us)?;
                        tally.record(us);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tally.failed(&e, t0 >= measure_from);
                        glommio::timer::sleep(ERROR_PAUSE).await;
                    }
                }
                i += depth as u64;
            }
            Ok::<_, anyhow::Error>(kinds)
        }));
    }
    let mut by_kind: Vec<Histogram<u64>> = (0..MAX_KINDS).map(|_| histogram()).collect();
    for w in workers {
        for (all, one) in by_kind.iter_mut().zip(w.await?) {
            all.add(one)?;
        }
    }
    let mut latency_us = histogram();
    for h in &by_kind {
        latency_us.add(h)?;
    }
    Ok(Measured {
        latency_us,
        by_kind,
        done: tally.done.get(),
        errors: tally.errors.get(),
        first_error: tally.first_error.borrow().clone(),
        elapsed: measure_from.elapsed(),
    })
}

/// Open loop at `rate` operations per second over the window, at most `max_in_flight` at once.
pub async fn open_loop<O: Operation + 'static>(
    op: Rc<O>,
    rate: f64,
    max_in_flight: usize,
    window: Window,
    tally: Rc<Tally>,
) -> Result<Measured> {
    assert!(rate > 0.0 && max_in_flight > 0);
    let started = Instant::now();
    let measure_from = started + window.ramp;
    let hist: Rc<RefCell<Vec<Histogram<u64>>>> =
        Rc::new(RefCell::new((0..MAX_KINDS).map(|_| histogram()).collect()));
    let in_flight = Rc::new(Cell::new(0usize));
    let finished = Rc::new(hexad_client::sync::Notify::default());
    #[allow(clippy::cast_sign_loss)] // rate > 0 is asserted above
    let total = (rate * (window.ramp + window.runtime).as_secs_f64()) as u64;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            glommio::timer::sleep(wait).await;
        }
        while in_flight.get() >= max_in_flight {
            finished.notified().await;
        }
        in_flight.set(in_flight.get() + 1);
        let (op, hist, in_flight, finished, tally) = (
            op.clone(),
            hist.clone(),
            in_flight.clone(),
            finished.clone(),
            tally.clone(),
        );
        glommio::spawn_local(async move {
            match op.run(i).await {
                // From the scheduled time, not the actual start: coordinated-omission correct.
                Ok(kind) if due >= measure_from => {
                    let us = due.elapsed().as_micros() as u64;
                    let _ = hist.borrow_mut()[kind.min(MAX_KINDS - 1)].record(us);
                    tally.record(us);
                }
                Ok(_) => {}
                Err(e) => {
                    tally.failed(&e, due >= measure_from);
                    glommio::timer::sleep(ERROR_PAUSE).await;
                }
            }
            in_flight.set(in_flight.get() - 1);
            finished.notify();
        })
        .detach();
    }
    while in_flight.get() > 0 {
        finished.notified().await;
    }
    let by_kind = hist.borrow().clone();
    let mut latency_us = histogram();
    for h in &by_kind {
        latency_us.add(h)?;
    }
    Ok(Measured {
        latency_us,
        by_kind,
        done: tally.done.get(),
        errors: tally.errors.get(),
        first_error: tally.first_error.borrow().clone(),
        elapsed: measure_from.elapsed(),
    })
}

/// Runs `work` on a glommio executor of its own thread (not pinned) and returns its
/// result.
pub fn on_executor<T, F, Fut>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("hexad-bench")
        .spawn(work)
        .map_err(|e| anyhow::anyhow!("cannot start executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("bench executor failed: {e}"))?
}

/// Runs `write(target, k)` once for every page `k < pages` of each of `targets` targets
/// (volumes, segments), `workers` at a time per target: the prefill of read jobs.
pub async fn fill_pages<F, Fut>(targets: usize, pages: u64, workers: usize, write: F) -> Result<()>
where
    F: Fn(usize, u64) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<()>> + 'static,
{
    let mut tasks = Vec::new();
    for target in 0..targets {
        let next = Rc::new(Cell::new(0u64));
        for _ in 0..workers {
            let (next, write) = (next.clone(), write.clone());
            tasks.push(glommio::spawn_local(async move {
                while next.get() < pages {
                    let k = next.get();
                    next.set(k + 1);
                    write(target, k).await?;
                }
                Ok::<(), anyhow::Error>(())
            }));
        }
    }
    for t in tasks {
        t.await.map_err(|e| e.context("prefilling pages"))?;
    }
    Ok(())
}

/// Every shard's `GetStats`, summed (blocking calls).
pub fn sum_stats(
    shards: &[std::net::SocketAddr],
    timeout: Duration,
) -> Result<hexad_client::wire::NodeStats> {
    use hexad_client::wire::Message;
    let mut t = hexad_client::wire::NodeStats::default();
    for addr in shards {
        let mut c = hexad_client::blocking::Connection::connect(*addr, timeout)?;
        let Message::Stats(s) = c.call(&Message::GetStats)? else {
            anyhow::bail!("GetStats from {addr}: not a Stats reply");
        };
        t = t.plus(s);
    }
    Ok(t)
}

/// The shape of a measured load: how many operations in flight, for how long, open or
/// closed loop, and how to label the live report.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub depth: usize,
    pub window: Window,
    /// Open loop at this many operations per second (at most `depth` in flight).
    pub rate_iops: Option<f64>,
    /// No live report (JSON output).
    pub quiet: bool,
    /// What the live report counts per second ("commits/s", "reads/s", ...).
    pub unit: &'static str,
    /// Payload bytes an operation moves, for the live MB/s.
    pub bytes_per_op: usize,
}

impl Plan {
    /// A `write` job's load: `depth` in flight in all, `bytes_per_op` per operation.
    pub fn for_job(
        args: &crate::write::WriteArgs,
        rw: crate::write::Rw,
        depth: usize,
        bytes_per_op: usize,
    ) -> Plan {
        Plan {
            depth,
            window: Window {
                ramp: Duration::from_secs(args.ramp_time),
                runtime: Duration::from_secs(args.runtime),
            },
            rate_iops: args.rate_iops,
            quiet: args.output_format == "json",
            unit: if rw.reads() { "reads/s" } else { "ops/s" },
            bytes_per_op,
        }
    }
}

/// What a measured load produced.
pub struct Loaded {
    pub latency_us: Histogram<u64>,
    /// Per operation kind.
    pub by_kind: Vec<Histogram<u64>>,
    pub ops: u64,
    /// Failed operations in the measured window, and the first failure.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub wall_start: std::time::SystemTime,
    /// Each measured second.
    pub intervals: Vec<crate::hdrlog::Interval>,
    /// CPU the writer and the nodes used in the measured window.
    pub cpu: crate::cpu::CpuUse,
}

/// Runs `op` as `plan` says, with a live one-line report each second (unless quiet) and a
/// latency histogram per measured second; `cpu` is sampled when the measured window starts
/// and when the load ends.
pub async fn measure<O: Operation + 'static>(
    op: Rc<O>,
    plan: Plan,
    cpu: &crate::cpu::NodeCpu,
) -> Result<Loaded> {
    let tally = Rc::new(Tally::with_intervals());
    let started = Instant::now();
    let wall_start = std::time::SystemTime::now();
    let ramp_end = started + plan.window.ramp;
    let deadline = ramp_end + plan.window.runtime;
    let cpu_start = {
        let cpu = cpu.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(ramp_end.saturating_duration_since(Instant::now())).await;
            cpu.sample()
        })
    };
    let progress = {
        let tally = tally.clone();
        glommio::spawn_local(async move {
            let mut intervals: Vec<crate::hdrlog::Interval> = Vec::new();
            let mut so_far = histogram();
            let mut interval_start = Instant::now();
            while Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                let h = tally.take_interval().expect("intervals are kept");
                let len = interval_start.elapsed();
                let rate = h.len() as f64 / len.as_secs_f64();
                let at = started.elapsed().as_secs_f64();
                if plan.quiet {
                } else if interval_start < ramp_end {
                    eprintln!("[{at:>4.0}s] ramping (not measured)");
                } else {
                    let _ = so_far.add(&h);
                    eprintln!(
                        "[{at:>4.0}s] {rate:>8.0} {} {:>7.1} MB/s  p99 {} us (last second), {} us (so far)  errors {}",
                        plan.unit,
                        rate * plan.bytes_per_op as f64 / 1e6,
                        h.value_at_quantile(0.99),
                        so_far.value_at_quantile(0.99),
                        tally.errors.get()
                    );
                }
                if interval_start >= ramp_end {
                    intervals.push((interval_start.duration_since(started), len, h));
                }
                interval_start = Instant::now();
            }
            intervals
        })
    };
    let measured = match plan.rate_iops {
        Some(rate) => open_loop(op, rate, plan.depth, plan.window, tally).await,
        None => closed_loop(op, plan.depth, plan.window, tally).await,
    }
    .map_err(|e| e.context("an operation failed"))?;
    let cpu_end = cpu.sample();
    let cpu = crate::cpu::CpuUse::between(cpu_start.await, cpu_end, measured.done);
    let intervals = progress.await;
    Ok(Loaded {
        latency_us: measured.latency_us,
        by_kind: measured.by_kind,
        ops: measured.done,
        errors: measured.errors,
        first_error: measured.first_error,
        elapsed_s: measured.elapsed.as_secs_f64(),
        wall_start,
        intervals,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    /// A target that answers in 100 us, except that nothing completes between 1.0 s and
    /// 1.5 s after `start` (a 500 ms stall).
    struct Stalling {
        start: Instant,
    }

    impl Operation for Stalling {
        async fn run(&self, _i: u64) -> Result<usize> {
            glommio::timer::sleep(Duration::from_micros(100)).await;
            let stall =
                (self.start + Duration::from_secs(1))..(self.start + Duration::from_millis(1500));
            let now = Instant::now();
            if stall.contains(&now) {
                glommio::timer::sleep(stall.end - now).await;
            }
            Ok(0)
        }
    }

    /// Slow (50 ms) for the first 300 ms, then fast (100 us).
    struct SlowStart {
        start: Instant,
    }

    impl Operation for SlowStart {
        async fn run(&self, _i: u64) -> Result<usize> {
            // Slow ops end by 350 ms, before the 400 ms ramp; thresholds leave room for a
            // busy machine's timer delays.
            let slow = self.start.elapsed() < Duration::from_millis(150);
            glommio::timer::sleep(if slow {
                Duration::from_millis(200)
            } else {
                Duration::from_micros(100)
            })
            .await;
            Ok(0)
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        LocalExecutorBuilder::new(Placement::Unbound)
            .make()
            .unwrap()
            .run(f)
    }

    fn window(ramp_ms: u64, runtime_ms: u64) -> Window {
        Window {
            ramp: Duration::from_millis(ramp_ms),
            runtime: Duration::from_millis(runtime_ms),
        }
    }

    /// Fails every third operation.
    struct Flaky;

    impl Operation for Flaky {
        async fn run(&self, i: u64) -> Result<usize> {
            glommio::timer::sleep(Duration::from_micros(200)).await;
            if i.is_multiple_of(3) {
                anyhow::bail!("operation {i} failed");
            }
            Ok(0)
        }
    }

    #[test]
    fn failed_operations_are_counted_and_the_load_goes_on() {
        let (closed, open) = run(async {
            let closed = closed_loop(Rc::new(Flaky), 2, window(0, 300), Rc::default())
                .await
                .unwrap();
            let open = open_loop(Rc::new(Flaky), 300.0, 4, window(0, 300), Rc::default())
                .await
                .unwrap();
            (closed, open)
        });
        for (name, m) in [("closed", closed), ("open", open)] {
            assert!(
                m.errors > 0 && m.done > 0,
                "{name}: {} errors, {} done",
                m.errors,
                m.done
            );
            assert!(
                m.first_error
                    .as_deref()
                    .is_some_and(|e| e.contains("failed")),
                "{name}: {:?}",
                m.first_error
            );
        }
    }

    #[test]
    fn a_tally_keeps_large_latencies_in_its_intervals() {
        let t = Tally::with_intervals();
        for us in [10, 5_000, 2_000_000] {
            t.record(us);
        }
        let h = t.take_interval().unwrap();
        assert_eq!(h.len(), 3);
        assert!(h.max() >= 1_999_000, "max {}", h.max());
        assert_eq!(t.take_interval().unwrap().len(), 0);
        assert_eq!(t.done.get(), 3);
        assert!(Tally::default().take_interval().is_none());
    }

    #[test]
    fn open_loop_reports_a_stall_that_closed_loop_hides() {
        let (open, closed) = run(async {
            let open = open_loop(
                Rc::new(Stalling {
                    start: Instant::now(),
                }),
                1000.0,
                1,
                window(0, 2000),
                Rc::default(),
            )
            .await
            .unwrap();
            let closed = closed_loop(
                Rc::new(Stalling {
                    start: Instant::now(),
                }),
                1,
                window(0, 2000),
                Rc::default(),
            )
            .await
            .unwrap();
            (open, closed)
        });
        // Open loop: ~500 of ~2000 operations were due during the stall; they waited up to
        // 500 ms behind it, so the upper quartile shows it.
        let open_p90 = open.latency_us.value_at_quantile(0.90);
        assert!(
            open_p90 >= 100_000,
            "open-loop p90 {open_p90} us should show the 500 ms stall"
        );
        assert!(open.latency_us.max() >= 450_000);
        // Closed loop: one operation saw the stall; everything else is fast.
        let closed_p90 = closed.latency_us.value_at_quantile(0.90);
        assert!(closed_p90 < 50_000, "closed-loop p90 {closed_p90} us");
        assert!(
            closed.latency_us.max() >= 450_000,
            "the one stalled operation is still recorded"
        );
        println!("open p90 {open_p90} us; closed p90 {closed_p90} us");
    }

    #[test]
    fn ramp_time_leaves_the_warm_up_out_of_the_figures() {
        let (ramped, plain, open_ramped) = run(async {
            let ramped = closed_loop(
                Rc::new(SlowStart {
                    start: Instant::now(),
                }),
                2,
                window(400, 500),
                Rc::default(),
            )
            .await
            .unwrap();
            let plain = closed_loop(
                Rc::new(SlowStart {
                    start: Instant::now(),
                }),
                2,
                window(0, 900),
                Rc::default(),
            )
            .await
            .unwrap();
            let open_ramped = open_loop(
                Rc::new(SlowStart {
                    start: Instant::now(),
                }),
                200.0,
                8,
                window(400, 500),
                Rc::default(),
            )
            .await
            .unwrap();
            (ramped, plain, open_ramped)
        });
        assert!(
            plain.latency_us.max() >= 180_000,
            "without a ramp the slow start is measured"
        );
        assert!(
            ramped.latency_us.max() < 150_000,
            "closed loop with ramp: max {} us",
            ramped.latency_us.max()
        );
        assert!(
            open_ramped.latency_us.max() < 150_000,
            "open loop with ramp: max {} us",
            open_ramped.latency_us.max()
        );
        assert!(
            ramped.elapsed < Duration::from_millis(700),
            "elapsed counts from the end of the ramp"
        );
    }
}
