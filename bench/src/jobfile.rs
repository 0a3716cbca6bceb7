//! Job files: `hexad-bench FILE.toml` runs the jobs of a TOML file one after another, as
//! fio runs a job file. Keys are the `write` options without their dashes (`rw`, `bs`,
//! `iodepth`, `runtime`, `size`, `rate_iops`, `slo`, …); `[global]` sets defaults and each
//! `[[job]]` its own values plus an optional `name`. Each job's options are checked exactly
//! as on the command line, so an unknown key or a contradiction is the same clear error.
//!
//! ```toml
//! [global]
//! target = "local"
//! runtime = 5
//! [[job]]
//! name = "commits"
//! rw = "randwrite"
//! iodepth = 16
//! [[job]]
//! name = "reads"
//! rw = "randread"
//! ```
//!
//! With `target = "local"` every job runs on the same embedded cluster, each on volumes of
//! its own (from `volume_base` + 1000 × the job's index). `plot` in `[global]` draws every job's curve
//! in one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::write::WriteArgs;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(default)]
    global: BTreeMap<String, toml::Value>,
    #[serde(default)]
    job: Vec<BTreeMap<String, toml::Value>>,
}

/// Parses one job's options through the same command-line parser as `write`.
#[derive(Debug, Parser)]
#[command(name = "job")]
struct OneJob {
    #[command(flatten)]
    args: WriteArgs,
}

/// A job ready to run: its name and its options.
pub struct Job {
    pub name: String,
    pub args: WriteArgs,
}

/// Reads `path` and checks every job's options.
pub fn load(path: &Path) -> Result<(Vec<Job>, Option<PathBuf>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: JobFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if file.job.is_empty() {
        bail!("{}: no [[job]]", path.display());
    }
    let mut global = file.global;
    let plot = match global.remove("plot") {
        Some(toml::Value::String(p)) => Some(PathBuf::from(p)),
        Some(other) => bail!("{}: plot must be a file name, not {other}", path.display()),
        None => None,
    };
    let mut jobs = Vec::new();
    for (i, spec) in file.job.iter().enumerate() {
        let mut keys = global.clone();
        keys.extend(spec.clone());
        let name = match keys.get("name") {
            Some(toml::Value::String(n)) => n.clone(),
            Some(other) => bail!(
                "{}: job {}: name must be a string, not {other}",
                path.display(),
                i + 1
            ),
            None => {
                let n = format!("job{}", i + 1);
                keys.insert("name".into(), toml::Value::String(n.clone()));
                n
            }
        };
        if keys.contains_key("plot") {
            bail!(
                "{}: job {name}: plot belongs in [global] (one plot for all jobs)",
                path.display()
            );
        }
        let base: u64 = match keys.remove("volume_base") {
            Some(toml::Value::Integer(v)) => u64::try_from(v).context("volume_base")?,
            Some(other) => bail!(
                "{}: volume_base must be an integer, not {other}",
                path.display()
            ),
            None => 1000,
        };
        let mut argv = vec![
            "job".to_string(),
            // Each job's volumes (one per numjobs, or more on a node target) stay clear
            // of the next job's.
            format!("--volume-base={}", base + 1000 * i as u64),
        ];
        for (k, v) in &keys {
            let value = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!(
                    "{}: job {name}: {k} = {other} is not a single value",
                    path.display()
                ),
            };
            // `rate_iops` and `ramp_time` keep fio's underscores; the rest use dashes.
            let flag = if matches!(k.as_str(), "rate_iops" | "ramp_time") {
                k.clone()
            } else {
                k.replace('_', "-")
            };
            argv.push(format!("--{flag}={value}"));
        }
        let parsed = OneJob::try_parse_from(&argv).map_err(|e| {
            anyhow::anyhow!("{}: job {name}: {}", path.display(), e.to_string().trim())
        })?;
        crate::write::validate(&parsed.args)
            .with_context(|| format!("{}: job {name}", path.display()))?;
        jobs.push(Job {
            name,
            args: parsed.args,
        });
    }
    Ok((jobs, plot))
}

/// Runs the jobs of `path` in order.
pub fn run(path: &Path) -> Result<()> {
    let (jobs, plot) = load(path)?;
    let local = jobs.iter().any(|j| j.args.target == "local");
    if local && !jobs.iter().all(|j| j.args.target == "local") {
        bail!(
            "{}: mix of local and other targets; give every job the same target",
            path.display()
        );
    }
    let cluster = if local {
        Some(crate::local::LocalCluster::start(&jobs[0].args.local_dir)?)
    } else {
        None
    };
    let mut curves: Vec<(String, Histogram<u64>)> = Vec::new();
    for job in &jobs {
        println!("== job {}", job.name);
        let slo = crate::write::validate(&job.args)?;
        let hist = match &cluster {
            Some(c) => crate::write::run_on_local(&job.args, c, slo.as_deref())?,
            None => crate::write::run_job(&job.args)?,
        };
        curves.push((job.name.clone(), hist));
    }
    if let Some(p) = plot {
        let series: Vec<(String, &Histogram<u64>)> =
            curves.iter().map(|(n, h)| (n.clone(), h)).collect();
        crate::plot::write_svg(&p, &format!("hexad-bench {}", path.display()), &series)?;
        println!("latency plot: {}", p.display());
    }
    Ok(())
}
