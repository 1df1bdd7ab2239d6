//! Lazy process-wide state that survives `fork` from a multi-threaded
//! process.
//!
//! `std::sync::Once` and `OnceLock` keep an "in progress" state while one
//! thread runs the initializer and make every other thread wait for it. If
//! another thread forks meanwhile, the child inherits "in progress" with no
//! thread to finish it, and its first use waits forever. The primitives here
//! never wait: every thread that finds the value missing builds its own and
//! the first to publish wins, so there is no state a fork can freeze.
//!
//! They suit values that are cheap to build and the same whoever builds them
//! (tables, registrations of idempotent handlers).

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// A value built on first use and never freed, without waiting.
pub struct RaceCell<T> {
    p: AtomicPtr<T>,
}

impl<T> RaceCell<T> {
    pub const fn new() -> RaceCell<T> {
        RaceCell {
            p: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The value, building it with `f` if nobody has published one yet.
    /// Racing threads may each call `f`; one result is kept, the others are
    /// dropped.
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        let p = self.p.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: only pointers from Box::into_raw below are published,
            // and they are never freed.
            return unsafe { &*p };
        }
        let mine = Box::into_raw(Box::new(f()));
        match self.p.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published; never freed.
            Ok(_) => unsafe { &*mine },
            Err(winner) => {
                // SAFETY: `mine` came from Box::into_raw and was never shared.
                drop(unsafe { Box::from_raw(mine) });
                // SAFETY: as above, published pointers are never freed.
                unsafe { &*winner }
            }
        }
    }
}

impl<T> Default for RaceCell<T> {
    fn default() -> Self {
        RaceCell::new()
    }
}

// SAFETY: the cell hands out shared references to a T built once; that is
// sound to share across threads exactly when T is Sync (and to build on one
// thread and read on another when T is Send).
unsafe impl<T: Send + Sync> Sync for RaceCell<T> {}

/// Registers `handler` as a `pthread_atfork` child handler once `registered`
/// says it is not yet, and returns only after a registration has completed
/// (this thread's or another's), so state created afterwards is covered.
/// Two threads may both register; `handler` must therefore be idempotent
/// (it only stores atomics). Returns false if registration failed (ENOMEM).
pub fn atfork_child(registered: &AtomicBool, handler: extern "C" fn()) -> bool {
    if registered.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: registers a plain extern "C" function with no prepare or
    // parent handler; the caller's handler only touches atomics.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(handler)) };
    if rc != 0 {
        return false;
    }
    registered.store(true, Ordering::Release);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn racing_threads_all_see_one_value() {
        let cell = Arc::new(RaceCell::<Vec<usize>>::new());
        let built = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (cell, built) = (cell.clone(), built.clone());
                std::thread::spawn(move || {
                    let v = cell.get_or_init(|| {
                        built.fetch_add(1, Ordering::Relaxed);
                        vec![i]
                    });
                    v as *const Vec<usize> as usize
                })
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "one published value");
        assert!(built.load(Ordering::Relaxed) >= 1);
        assert_eq!(cell.get_or_init(|| vec![99]).len(), 1);
    }

    #[test]
    fn a_fork_in_the_middle_of_building_does_not_hang_the_child() {
        static CELL: RaceCell<u64> = RaceCell::new();
        let t = std::thread::spawn(|| {
            *CELL.get_or_init(|| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                7
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: the child only calls async-signal-safe-in-practice code
        // (the cell, a plain store) and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let v = *CELL.get_or_init(|| 7);
            // SAFETY: _exit in the child.
            unsafe { libc::_exit(if v == 7 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe {
            libc::alarm(0);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(t.join().unwrap(), 7);
    }
}
