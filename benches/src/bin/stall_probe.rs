//! How much of a core the machine itself takes away: spins on the monotonic clock for
//! `--seconds` and reports every gap between two consecutive readings longer than
//! `--gap-us` (the thread was not running: preempted in the guest, or its vCPU
//! descheduled by the host).
//!
//! The load harness runs one per core, both at once, before it measures anything: on a
//! virtual machine whose host takes 1–2% of each vCPU in stalls of several
//! milliseconds, a p99 of a few milliseconds is the machine's, whatever the server
//! does, and the results say so.

use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "Busy-loop probe of the time a core is taken away (host or guest stalls)")]
struct Args {
    /// How long to spin.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// A gap between two clock readings longer than this counts as a stall.
    #[arg(long, default_value_t = 50)]
    gap_us: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one probe saw.
#[derive(Debug, Serialize, PartialEq)]
struct Report {
    seconds: f64,
    stalls: u64,
    /// Stalls longer than 1 ms.
    stalls_over_1ms: u64,
    /// Share of the wall time spent in stalls, in percent.
    lost_pct: f64,
    max_ms: f64,
}

/// Tallies gaps between clock readings.
#[derive(Debug)]
struct Tally {
    threshold: Duration,
    stalls: u64,
    over_1ms: u64,
    lost: Duration,
    max: Duration,
}

impl Tally {
    fn new(threshold: Duration) -> Tally {
        Tally {
            threshold,
            stalls: 0,
            over_1ms: 0,
            lost: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    #[inline]
    fn gap(&mut self, gap: Duration) {
        if gap > self.threshold {
            self.stalls += 1;
            self.over_1ms += u64::from(gap > Duration::from_millis(1));
            self.lost += gap;
            self.max = self.max.max(gap);
        }
    }

    fn report(&self, wall: Duration) -> Report {
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        Report {
            seconds: round(wall.as_secs_f64(), 2),
            stalls: self.stalls,
            stalls_over_1ms: self.over_1ms,
            lost_pct: round(
                100.0 * self.lost.as_secs_f64() / wall.as_secs_f64().max(1e-9),
                2,
            ),
            max_ms: round(self.max.as_secs_f64() * 1e3, 2),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let mut tally = Tally::new(Duration::from_micros(args.gap_us));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut last = start;
    loop {
        let now = Instant::now();
        tally.gap(now - last);
        last = now;
        if now >= end {
            break;
        }
    }
    let report = tally.report(last - start);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} stalls over {} µs ({} over 1 ms) in {} s: {}% of the time lost, longest {} ms",
            report.stalls,
            args.gap_us,
            report.stalls_over_1ms,
            report.seconds,
            report.lost_pct,
            report.max_ms
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_gaps_above_the_threshold() {
        let mut tally = Tally::new(Duration::from_micros(50));
        for gap in [10, 50, 51, 2_000, 500] {
            tally.gap(Duration::from_micros(gap));
        }
        assert_eq!(
            tally.report(Duration::from_millis(100)),
            Report {
                seconds: 0.1,
                stalls: 3,
                stalls_over_1ms: 1,
                lost_pct: 2.55,
                max_ms: 2.0,
            }
        );
    }
}
