//! `--slo 'p99<=2ms,p99.9<=10ms,iops>=20000'`: targets a run must meet. Each target is a
//! metric, `<=` or `>=`, and a value; latencies take `us`, `ms` or `s`. A run that misses any
//! target makes hexad-bench exit non-zero, naming every target it missed.

use std::fmt;

/// What a target constrains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Latency at this percentile (0..=100), in microseconds.
    Percentile(f64),
    /// Maximum latency, in microseconds.
    Max,
    /// Operations per second (records/s for node targets, commits/s for cluster targets).
    Iops,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    AtMost,
    AtLeast,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub metric: Metric,
    pub bound: Bound,
    /// Microseconds for latency metrics, operations per second for `iops`.
    pub value: f64,
    text: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a finished run measured, for checking.
pub trait Measured {
    fn latency_us_at(&self, percentile: f64) -> u64;
    fn latency_us_max(&self) -> u64;
    fn iops(&self) -> f64;
}

/// A finished run: its latency histogram (microseconds) and throughput.
pub struct Outcome<'a> {
    pub latency_us: &'a hdrhistogram::Histogram<u64>,
    pub iops: f64,
}

impl Measured for Outcome<'_> {
    fn latency_us_at(&self, percentile: f64) -> u64 {
        self.latency_us.value_at_quantile(percentile)
    }
    fn latency_us_max(&self) -> u64 {
        self.latency_us.max()
    }
    fn iops(&self) -> f64 {
        self.iops
    }
}

/// Checks `run` against `targets`; the error names every missed target.
pub fn check(targets: &[Target], run: &impl Measured) -> anyhow::Result<()> {
    let missed = violations(targets, run);
    if missed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("SLO violated: {}", missed.join("; "))
}

/// Parses a comma-separated list of targets.
pub fn parse(spec: &str) -> Result<Vec<Target>, String> {
    let targets: Vec<Target> = spec
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_one)
        .collect::<Result<_, _>>()?;
    if targets.is_empty() {
        return Err(format!(
            "--slo {spec:?}: no targets (expected e.g. 'p99<=2ms,iops>=20000')"
        ));
    }
    Ok(targets)
}

fn parse_one(t: &str) -> Result<Target, String> {
    let (name, bound, value) = if let Some((n, v)) = t.split_once("<=") {
        (n, Bound::AtMost, v)
    } else if let Some((n, v)) = t.split_once(">=") {
        (n, Bound::AtLeast, v)
    } else {
        return Err(format!(
            "SLO target {t:?}: expected METRIC<=VALUE or METRIC>=VALUE"
        ));
    };
    let name = name.trim();
    let value = value.trim();
    let metric = match name {
        "iops" => Metric::Iops,
        "max" => Metric::Max,
        p if p.starts_with('p') => {
            let pct: f64 = p[1..].parse().map_err(|_| {
                format!("SLO target {t:?}: {p:?} is not a percentile like p99 or p99.9")
            })?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!(
                    "SLO target {t:?}: percentile {pct} is outside 0..=100"
                ));
            }
            Metric::Percentile(pct)
        }
        other => {
            return Err(format!(
                "SLO target {t:?}: unknown metric {other:?} (use pNN, max or iops)"
            ))
        }
    };
    let value = match metric {
        Metric::Iops => value.parse::<f64>().map_err(|_| {
            format!("SLO target {t:?}: {value:?} is not a number of operations per second")
        })?,
        Metric::Percentile(_) | Metric::Max => {
            parse_duration_us(value).map_err(|e| format!("SLO target {t:?}: {e}"))?
        }
    };
    if value < 0.0 || !value.is_finite() {
        return Err(format!(
            "SLO target {t:?}: value must be a finite, non-negative number"
        ));
    }
    Ok(Target {
        metric,
        bound,
        value,
        text: t.to_string(),
    })
}

/// A duration such as `10s`, `1500ms` or `250us`.
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    let us = parse_duration_us(v)?;
    if !(us >= 0.0 && us.is_finite()) {
        return Err(format!("{v:?} is not a duration"));
    }
    Ok(std::time::Duration::from_secs_f64(us / 1e6))
}

fn parse_duration_us(v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("{v:?} needs a unit: us, ms or s"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a duration"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        other => return Err(format!("unknown unit {other:?} in {v:?} (use us, ms or s)")),
    };
    Ok(n * scale)
}

/// Every target the run missed, each with what was measured.
pub fn violations(targets: &[Target], run: &impl Measured) -> Vec<String> {
    targets
        .iter()
        .filter_map(|t| {
            let (got, shown) = match t.metric {
                Metric::Percentile(p) => {
                    let us = run.latency_us_at(p / 100.0);
                    (us as f64, format!("{us} us"))
                }
                Metric::Max => {
                    let us = run.latency_us_max();
                    (us as f64, format!("{us} us"))
                }
                Metric::Iops => (run.iops(), format!("{:.0}/s", run.iops())),
            };
            let ok = match t.bound {
                Bound::AtMost => got <= t.value,
                Bound::AtLeast => got >= t.value,
            };
            (!ok).then(|| format!("{t} missed: measured {shown}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Run {
        p50: u64,
        p99: u64,
        p999: u64,
        max: u64,
        iops: f64,
    }

    impl Measured for Run {
        fn latency_us_at(&self, q: f64) -> u64 {
            if q >= 0.999 {
                self.p999
            } else if q >= 0.99 {
                self.p99
            } else {
                self.p50
            }
        }
        fn latency_us_max(&self) -> u64 {
            self.max
        }
        fn iops(&self) -> f64 {
            self.iops
        }
    }

    const RUN: Run = Run {
        p50: 500,
        p99: 1_800,
        p999: 12_000,
        max: 30_000,
        iops: 25_000.0,
    };

    #[test]
    fn parses_the_documented_forms() {
        let t = parse("p99<=2ms, p99.9<=10ms,iops>=20000,max<=1s,p50<=700us").unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(
            (t[0].metric, t[0].bound, t[0].value),
            (Metric::Percentile(99.0), Bound::AtMost, 2_000.0)
        );
        assert_eq!(t[1].metric, Metric::Percentile(99.9));
        assert_eq!(
            (t[2].metric, t[2].bound, t[2].value),
            (Metric::Iops, Bound::AtLeast, 20_000.0)
        );
        assert_eq!((t[3].metric, t[3].value), (Metric::Max, 1e6));
    }

    #[test]
    fn rejects_bad_targets_with_a_reason() {
        for (spec, needle) in [
            ("", "no targets"),
            ("p99<2ms", "expected METRIC<=VALUE"),
            ("p99<=2", "needs a unit"),
            ("p99<=2min", "unknown unit"),
            ("p101<=2ms", "outside 0..=100"),
            ("pxx<=2ms", "not a percentile"),
            ("latency<=2ms", "unknown metric"),
            ("iops>=lots", "not a number"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn passes_and_fails_where_it_should() {
        assert!(violations(&parse("p99<=2ms,iops>=20000,p50<=500us").unwrap(), &RUN).is_empty());
        let missed = violations(
            &parse("p99<=1ms,p99.9<=10ms,iops>=30000,max<=1s").unwrap(),
            &RUN,
        );
        assert_eq!(missed.len(), 3, "{missed:?}");
        assert!(
            missed[0].starts_with("p99<=1ms missed: measured 1800 us"),
            "{missed:?}"
        );
        assert!(
            missed[1].starts_with("p99.9<=10ms missed: measured 12000 us"),
            "{missed:?}"
        );
        assert!(missed[2].starts_with("iops>=30000 missed"), "{missed:?}");
    }
}
