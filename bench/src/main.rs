//! hexad-bench: load generator for hexad. `write` appends to one node or commits through the
//! quorum client (to an embedded local cluster or a running one), with HDR latency, SLO
//! checks and an open-loop mode; `recover` times volume opens after a writer crash;
//! `pages` measures page reads and reader lag; `quickstart` is the one-command demo;
//! `hexad-bench FILE.toml` runs the jobs of a job file. What is still to come is listed
//! in issue #7.

mod cpu;
mod drive;
mod fault;
mod hdrlog;
mod jobfile;
mod local;
mod node;
mod pages;
mod plot;
mod quorum;
mod raw;
mod rebuild;
mod recover;
mod report;
mod restart;
mod slo;
mod write;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hexad-bench", about = "hexad load generator", version)]
#[command(args_conflicts_with_subcommands = true, subcommand_required = false)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML job file: `[global]` defaults and `[[job]]` entries with `write`'s options.
    job_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an embedded 6-node cluster, commit through the quorum client for a few seconds,
    /// print the summary, and remove the cluster.
    Quickstart {
        /// Seconds of load.
        #[arg(long, default_value_t = 5)]
        runtime: u64,
        /// Where the embedded cluster keeps its data (a real disk, not tmpfs).
        #[arg(long, default_value = "/var/tmp")]
        local_dir: std::path::PathBuf,
        /// Where to write the latency-by-percentile plot of both jobs.
        #[arg(long, default_value = "hexad-quickstart.svg")]
        plot: std::path::PathBuf,
    },
    /// Append redo records to one node and report throughput, latency and group commit.
    Write(write::WriteArgs),
    /// Time volume opens (recovery) by number of PGs and records left by a crashed writer.
    Recover(recover::RecoverArgs),
    /// Page read latency through the quorum client, and a read-only attachment's lag.
    Pages(pages::PagesArgs),
    /// Node restart time by page-store size (only the hot log is scanned).
    Restart(restart::RestartArgs),
    /// Segment rebuild throughput from a peer's page baseline, and foreground commit
    /// latency before and during it.
    Rebuild(rebuild::RebuildArgs),
}

fn main() -> ExitCode {
    // The local cluster's nodes are this program re-executed (local.rs).
    let mut command_line = std::env::args();
    if command_line.nth(1).as_deref() == Some(local::NODE_ARG) {
        let node_args = std::iter::once("hexad-node".to_string()).chain(command_line);
        let code = hexad_node::cli::main_from(node_args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    let result = match (cli.command, cli.job_file) {
        (
            Some(Command::Quickstart {
                runtime,
                local_dir,
                plot,
            }),
            _,
        ) => write::quickstart(runtime, local_dir, &plot),
        (Some(Command::Write(args)), _) => write::run(&args),
        (Some(Command::Recover(args)), _) => recover::run(&args),
        (Some(Command::Pages(args)), _) => pages::run(&args),
        (Some(Command::Restart(args)), _) => restart::run(&args),
        (Some(Command::Rebuild(args)), _) => rebuild::run(&args),
        (None, Some(file)) => jobfile::run(&file),
        (None, None) => Err(anyhow::anyhow!(
            "give a command (quickstart, write, recover, pages, restart, rebuild) or a job file; --help lists them"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexad-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
