//! The operating-system edge: clock, process identity (fork-safe), liveness
//! of other processes, sleeping.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail (checked anyway).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static ATFORK: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    // Only atomics here (async-signal-safe): the child re-reads its identity
    // lazily.
    PID.store(0, Ordering::Relaxed);
    START.store(0, Ordering::Relaxed);
}

/// The calling process's (pid, start time). Cached per process; the cache is
/// cleared in a fork child (pthread_atfork), so a child never uses its
/// parent's identity.
pub fn identity() -> (u32, u64) {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 && pid != u32::MAX {
        return (pid, START.load(Ordering::Relaxed));
    }
    // A registration failure (ENOMEM) would leave the cache unprotected:
    // then we stop caching. Never waits (see `forksafe`).
    if !crate::forksafe::atfork_child(&ATFORK, after_fork_in_child) {
        PID.store(u32::MAX, Ordering::Relaxed);
    }
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    let start = proc_stat(pid).map_or(0, |s| s.start_time);
    if PID.load(Ordering::Relaxed) != u32::MAX {
        START.store(start, Ordering::Relaxed);
        PID.store(pid, Ordering::Relaxed);
    }
    (pid, start)
}

/// The fields of `/proc/<pid>/stat` that tell processes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: u8,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // After the state (field 3), field 22 is the 19th.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether the process is dead: it does not exist (`kill(pid, 0)` gives
/// ESRCH), or with `check_start`, it is a zombie or its start time differs
/// (the pid was reused).
pub fn is_dead(pid: u32, start_time: u64, check_start: bool) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is
    // delivered.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    if !check_start {
        return false;
    }
    match proc_stat(pid) {
        // Vanished between the two checks.
        None => std::path::Path::new("/proc/self/stat").exists(),
        Some(s) => {
            s.state == b'Z' || s.state == b'X' || (start_time != 0 && s.start_time != start_time)
        }
    }
}

/// Sleeps until `deadline` on the `CLOCK_MONOTONIC` clock (absolute, so
/// interruptions and late starts do not add up).
pub fn sleep_until(deadline: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; the remaining-time pointer may be
        // null with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

/// Timer slack used while a waiter sleeps (the Linux default of 50 us
/// would add that much to every wake-up).
pub const WAIT_TIMER_SLACK_NS: u64 = 1_000;

/// Lowers the calling thread's timer slack for the duration of a wait and
/// restores it on drop, so the host thread's setting is left as it was.
pub struct SlackGuard {
    old: Option<u64>,
}

impl SlackGuard {
    pub fn new() -> SlackGuard {
        SlackGuard { old: None }
    }

    /// Called before each sleep; changes the slack once.
    pub fn tighten(&mut self) {
        if self.old.is_some() {
            return;
        }
        // SAFETY: PR_GET_TIMERSLACK/PR_SET_TIMERSLACK only read/change the
        // calling thread's timer slack; the extra arguments are ignored.
        let cur = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        if cur < 0 || cur as u64 <= WAIT_TIMER_SLACK_NS {
            self.old = Some(0);
            return;
        }
        // SAFETY: as above.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_TIMERSLACK,
                WAIT_TIMER_SLACK_NS as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        self.old = Some(if rc == 0 { cur as u64 } else { 0 });
    }
}

impl Default for SlackGuard {
    fn default() -> Self {
        SlackGuard::new()
    }
}

impl Drop for SlackGuard {
    fn drop(&mut self) {
        if let Some(old) = self.old.filter(|&o| o > 0) {
            // SAFETY: restores this thread's previous timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, old as libc::c_ulong, 0, 0, 0);
            }
        }
    }
}

/// The real user id (for the default directory name).
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_command_names() {
        let line =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: b'S',
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn own_identity_and_liveness() {
        let (pid, start) = identity();
        assert_eq!(pid, std::process::id());
        assert!(start > 0);
        assert!(!is_dead(pid, start, true));
        assert!(
            is_dead(pid, start + 1, true),
            "another start time means pid reuse"
        );
        assert!(is_dead(0, 0, false));
        let t0 = now_ns();
        sleep_until(t0 + 2_000_000);
        assert!(now_ns() >= t0 + 2_000_000);
    }

    #[test]
    fn slack_guard_restores_the_thread_setting() {
        // SAFETY: reads this thread's timer slack.
        let get = || unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) } as u64;
        let before = get();
        {
            let mut g = SlackGuard::new();
            g.tighten();
            g.tighten();
            assert_eq!(get(), before.min(WAIT_TIMER_SLACK_NS));
        }
        assert_eq!(get(), before);
    }
}
