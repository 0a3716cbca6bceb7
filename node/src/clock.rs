//! The time a shard's decisions read: reader-slot leases, floor pins, and whether appends
//! have stopped (the coalescer works harder then). The node runs on [`SystemClock`]; a
//! simulation passes a [`SimClock`] it moves itself, so a seed decides those outcomes too.
//! (Waits — timers, back-pressure, the coalescer's sleeps — still take real time.)

use std::cell::Cell;
use std::time::{Duration, Instant};

pub trait Clock {
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    elapsed: Cell<Duration>,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock {
            start: Instant::now(),
            elapsed: Cell::new(Duration::ZERO),
        }
    }
}

impl SimClock {
    pub fn advance(&self, by: Duration) {
        self.elapsed.set(self.elapsed.get() + by);
    }

    /// Time since the clock was made, as it counts it.
    pub fn elapsed(&self) -> Duration {
        self.elapsed.get()
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sim_clock_moves_only_when_told() {
        let c = SimClock::default();
        let t = c.now();
        assert_eq!(c.now(), t);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now() - t, Duration::from_millis(5));
        assert_eq!(c.elapsed(), Duration::from_millis(5));
    }
}
