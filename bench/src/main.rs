//! hexad-bench: load generator for hexad. This is the minimal write mode issue #2 asks for
//! (one node, no quorum); the fio-style generator with job files, targets, SLOs and plots is
//! issue #7.

mod drive;
mod quorum;
mod slo;
mod write;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hexad-bench", about = "hexad load generator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append redo records to one node and report throughput, latency and group commit.
    Write(write::WriteArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Write(args) => write::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexad-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
