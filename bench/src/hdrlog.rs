//! `--hdr-log FILE`: latency histograms of each second of the measured window, in the
//! `HdrHistogram` interval log format (V2 compressed histograms, one line per interval), as
//! `HistogramLogProcessor` and other `HdrHistogram` tools read it. Intervals are kept in
//! memory during the run (one compact histogram per second) and written at the end.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// One interval: its start (since the run's start), its length, and its latencies (µs).
pub type Interval = (Duration, Duration, Histogram<u64>);

/// Writes `intervals` of a run that started at `start` to `path`.
pub fn write(path: &Path, start: SystemTime, comment: &str, intervals: &[Interval]) -> Result<()> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("latency unit: microseconds")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| anyhow!("starting the HDR log: {e}"))?;
        for (at, len, h) in intervals {
            log.write_histogram(h, *at, *len, None)
                .map_err(|e| anyhow!("writing an HDR log interval: {e:?}"))?;
        }
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn a_written_log_reads_back_interval_by_interval() {
        let mut intervals = Vec::new();
        for s in 0..3u64 {
            let mut h = Histogram::<u64>::new(3).unwrap();
            for v in 1..=100 {
                h.record(v * (s + 1)).unwrap();
            }
            intervals.push((Duration::from_secs(s), Duration::from_secs(1), h));
        }
        let path = std::env::temp_dir().join(format!("hexad-hdr-{}.hlog", std::process::id()));
        write(&path, SystemTime::now(), "test", &intervals).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<_> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 3);
        assert!((lines[2].start_timestamp().as_secs_f64() - 2.0).abs() < 1e-6);
        assert!(
            (lines[1].max() - 200.0).abs() < 1.0,
            "max of interval 1: {}",
            lines[1].max()
        );
    }
}
