//! What the CPU-time examples share: Linux `clock_gettime` clocks and the
//! positional argument parser. Not an example itself (a folder without
//! `main.rs`); each example includes it with `mod common;`.
//!
//! Limits: Linux clock ids (`clock_gettime` is declared here rather than
//! taken from a crate to keep the examples free of extra dependencies).

// Each example uses only some of these.
#![allow(dead_code)]

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
}

/// `CLOCK_MONOTONIC` on Linux.
pub const MONOTONIC: i32 = 1;
/// `CLOCK_PROCESS_CPUTIME_ID` on Linux.
pub const PROCESS_CPUTIME: i32 = 2;
/// `CLOCK_THREAD_CPUTIME_ID` on Linux.
pub const THREAD_CPUTIME: i32 = 3;

/// The time of `clock` in nanoseconds.
pub fn now_ns(clock: i32) -> Result<u64, String> {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec for the call.
    if unsafe { clock_gettime(clock, &mut t) } != 0 {
        return Err(format!("clock_gettime({clock}) failed"));
    }
    Ok(t.sec as u64 * 1_000_000_000 + t.nsec as u64)
}

/// The calling thread's CPU time in nanoseconds.
pub fn thread_cpu_ns() -> Result<u64, String> {
    now_ns(THREAD_CPUTIME)
}

/// Positional argument `i` parsed as `T` (`None` when absent); `what`
/// names it in the error.
pub fn arg<T: std::str::FromStr>(
    args: &[String],
    i: usize,
    what: &str,
) -> Result<Option<T>, String> {
    match args.get(i) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{what}: cannot parse '{s}'")),
    }
}
