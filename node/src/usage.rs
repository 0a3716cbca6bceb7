//! What this process has used of the machine, for `Stats` and the bench.

/// User + system CPU time of this whole process (every thread) so far, in microseconds.
pub fn process_cpu_us() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0)
        };
        us(u.user_time()) + us(u.system_time())
    })
}
