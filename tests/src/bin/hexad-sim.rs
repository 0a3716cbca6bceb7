//! `hexad-sim`: runs the whole-cluster simulation ([`hexad_tests::sim`]) over many seeds
//! and reports every failure with the command that replays it.
//!
//! ```text
//! hexad-sim                                  # 100 seeds of every plan
//! hexad-sim --plan random --seeds 10000      # seeds 0..10000 of one plan
//! hexad-sim --hours 2 --from 50000           # every plan, seeds from 50000 on, for 2 h
//! hexad-sim --plan random --seed 72          # one seed, with its event trace
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use hexad_tests::sim::{replay_command, run, Plan};

/// How often a long run prints where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Trace lines printed for a failed seed (its replay prints all of them).
const TRACE_TAIL: usize = 40;

#[derive(Parser)]
#[command(
    name = "hexad-sim",
    about = "Runs the whole-cluster simulation over many seeds (issue #11)"
)]
struct Args {
    /// Which faults: random, down:N (node N down throughout), concurrent-open, or all.
    #[arg(long, default_value = "all")]
    plan: String,
    /// Run this many seeds, from --from on (default 100 unless --hours or --seed).
    #[arg(long, conflicts_with_all = ["hours", "seed"])]
    seeds: Option<u64>,
    /// Run seeds from --from on until this many hours have passed (e.g. 0.5).
    #[arg(long, conflicts_with = "seed")]
    hours: Option<f64>,
    /// Run this one seed and print its whole event trace.
    #[arg(long)]
    seed: Option<u64>,
    /// The first seed of a --seeds or --hours run.
    #[arg(long, default_value_t = 0)]
    from: u64,
}

fn plans(name: &str) -> Result<Vec<Plan>, String> {
    if name == "all" {
        Ok(Plan::ALL.to_vec())
    } else {
        Plan::parse(name).map(|p| vec![p])
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plans = match plans(&args.plan) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hexad-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        return replay(seed, &plans);
    }
    let deadline = match args.hours {
        Some(h) if !(h.is_finite() && h > 0.0) => {
            eprintln!("hexad-sim: --hours must be a positive number of hours, not {h}");
            return ExitCode::from(2);
        }
        Some(h) => Some(Instant::now() + Duration::from_secs_f64(h * 3600.0)),
        None => None,
    };
    let end = match (deadline, args.seeds) {
        (Some(_), _) => u64::MAX,
        (None, n) => args.from.saturating_add(n.unwrap_or(100)),
    };
    let started = Instant::now();
    let mut last_progress = started;
    let (mut runs, mut acked, mut in_doubt, mut cuts) = (0u64, 0usize, 0usize, 0u32);
    let mut failures = Vec::new();
    let mut seed = args.from;
    while seed < end && deadline.is_none_or(|d| Instant::now() < d) {
        for &plan in &plans {
            let (result, trace) = run(seed, plan);
            runs += 1;
            match result {
                Ok(r) => {
                    acked += r.acked;
                    in_doubt += r.in_doubt;
                    cuts += r.power_cuts;
                }
                Err(e) => {
                    let tail = trace.len().saturating_sub(TRACE_TAIL);
                    eprintln!(
                        "FAILED: seed {seed}, plan {}: {e}\n  the last events:\n    {}\n  replay: {}",
                        plan.name(),
                        trace[tail..].join("\n    "),
                        replay_command(seed, plan)
                    );
                    failures.push((seed, plan, e));
                }
            }
        }
        seed += 1;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "[{secs:>7.0} s] seeds {}..{seed}: {runs} runs, {:.2} runs/s, {acked} commits acknowledged, {} failures",
                args.from,
                runs as f64 / secs,
                failures.len()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let names: Vec<String> = plans.iter().map(|p| p.name()).collect();
    println!(
        "hexad-sim: seeds {}..{seed} of {} in {secs:.1} s: {runs} runs ({:.2} runs/s), {acked} commits acknowledged, {in_doubt} in doubt, {cuts} power cuts, {} failures",
        args.from,
        names.join(", "),
        runs as f64 / secs.max(1e-9),
        failures.len()
    );
    for (seed, plan, e) in &failures {
        println!("  seed {seed} ({}): {e}", plan.name());
        println!("    replay: {}", replay_command(*seed, *plan));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One seed of each plan, with the whole trace.
fn replay(seed: u64, plans: &[Plan]) -> ExitCode {
    let mut ok = true;
    for &plan in plans {
        let (result, trace) = run(seed, plan);
        println!("seed {seed}, plan {}:", plan.name());
        for line in &trace {
            println!("  {line}");
        }
        match result {
            Ok(r) => println!(
                "  passed: {} commits acknowledged, {} in doubt, {} power cuts",
                r.acked, r.in_doubt, r.power_cuts
            ),
            Err(e) => {
                println!("  FAILED: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
