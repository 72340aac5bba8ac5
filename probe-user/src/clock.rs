//! Kernel timestamps to wall-clock time.
//!
//! The kernel side stamps events with `CLOCK_BOOTTIME` (monotonic, counts suspend). The offset to
//! the Unix epoch is measured once at start, so converting an event is one addition.

/// Converts `CLOCK_BOOTTIME` nanoseconds to nanoseconds since the Unix epoch.
///
/// ```
/// use probe_user::WallClock;
///
/// let clock = WallClock::with_offset(1_700_000_000_000_000_000);
/// assert_eq!(clock.unix_ns(5), 1_700_000_000_000_000_005);
/// // Measured: an event stamped now is about now.
/// let now = WallClock::measure().unix_ns(0);
/// assert!(now > 1_700_000_000_000_000_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    boot_to_unix_ns: i128,
}

impl WallClock {
    /// Measures the current offset between `CLOCK_BOOTTIME` and `CLOCK_REALTIME`.
    pub fn measure() -> Self {
        // Bracket the realtime read by two boottime reads and take their midpoint.
        let before = now_ns(libc::CLOCK_BOOTTIME);
        let unix = now_ns(libc::CLOCK_REALTIME);
        let after = now_ns(libc::CLOCK_BOOTTIME);
        Self::with_offset(unix - (before + after) / 2)
    }

    /// A clock with a fixed offset (for tests and replays).
    pub const fn with_offset(boot_to_unix_ns: i128) -> Self {
        Self { boot_to_unix_ns }
    }

    /// Nanoseconds since the Unix epoch for a `CLOCK_BOOTTIME` stamp.
    pub fn unix_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.boot_to_unix_ns).clamp(0, u64::MAX as i128) as u64
    }
}

/// `CLOCK_BOOTTIME` now, the clock of the kernel side's timestamps.
pub(crate) fn boot_now_ns() -> u64 {
    now_ns(libc::CLOCK_BOOTTIME) as u64
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; both clocks exist on every kernel this tool supports.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_offset() {
        let clock = WallClock::with_offset(1_795_778_000_000_000_000);
        assert_eq!(clock.unix_ns(63_000_000_001), 1_795_778_063_000_000_001);
    }

    #[test]
    fn measured_clock_matches_system_time() {
        let clock = WallClock::measure();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let converted = clock.unix_ns(now_ns(libc::CLOCK_BOOTTIME) as u64) as i128;
        assert!(
            (converted - unix).abs() < 50_000_000,
            "off by {} ns",
            converted - unix
        );
    }
}
