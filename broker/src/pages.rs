//! The shared pages, on the broker's side (its FFI edge): a budget page per
//! process (a memfd the broker writes; the process gets a read-only
//! descriptor to it), and the process's own page (which it sends; mapped
//! here read-only).

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use tslice_proto::page::{
    BudgetPage, ProcessPage, BUDGET_LEN, BUDGET_MAGIC, PAGE_VERSION, PROCESS_LEN, PROCESS_MAGIC,
};

/// A mapping that lives as long as this value.
struct Mapping {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not unmapped elsewhere.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

fn map(fd: impl AsFd, len: usize, writable: bool) -> io::Result<Mapping> {
    let prot = if writable {
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
    } else {
        ProtFlags::PROT_READ
    };
    let n = NonZeroUsize::new(len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a fresh shared mapping of `len` bytes of a file we hold; the
    // kernel picks the address.
    let ptr =
        unsafe { mmap(None, n, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(io::Error::from)?;
    Ok(Mapping { ptr, len })
}

/// A process's budget page, as the broker writes it.
pub struct Budget {
    map: Mapping,
    fd: OwnedFd,
}

impl Budget {
    pub fn new() -> io::Result<Budget> {
        let fd = memfd_create(c"tslice-budget", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, BUDGET_LEN as i64).map_err(io::Error::from)?;
        let map = map(&fd, BUDGET_LEN, true)?;
        let b = Budget { map, fd };
        let p = b.page();
        p.version.store(PAGE_VERSION, Ordering::Relaxed);
        for d in &p.dev {
            d.share_ppm.store(1_000_000, Ordering::Relaxed);
            d.mem_limit.store(u64::MAX, Ordering::Relaxed);
        }
        p.magic.store(BUDGET_MAGIC, Ordering::Release);
        Ok(b)
    }

    pub fn page(&self) -> &BudgetPage {
        // SAFETY: the mapping is BUDGET_LEN >= size_of::<BudgetPage>() bytes,
        // page-aligned, lives as long as `self`, and is only accessed
        // through atomics (zero is a valid value of each).
        unsafe { &*(self.map.ptr.as_ptr() as *const BudgetPage) }
    }

    /// A read-only descriptor of the page, for the process: it cannot map
    /// it writable, so it cannot change its own budget.
    pub fn reader_fd(&self) -> io::Result<OwnedFd> {
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let f = std::fs::OpenOptions::new().read(true).open(path)?;
        Ok(OwnedFd::from(f))
    }
}

/// A process's own page, mapped read-only.
pub struct ProcessView {
    map: Mapping,
}

impl ProcessView {
    /// Maps a page a process sent; refuses one of the wrong size or kind.
    pub fn open(fd: OwnedFd) -> io::Result<ProcessView> {
        let len = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(io::Error::from)?
            .st_size as usize;
        if len < PROCESS_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("process page of {len} bytes"),
            ));
        }
        let v = ProcessView {
            map: map(&fd, PROCESS_LEN, false)?,
        };
        let p = v.page();
        if p.magic.load(Ordering::Acquire) != PROCESS_MAGIC
            || p.version.load(Ordering::Relaxed) != PAGE_VERSION
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a tslice process page of this version",
            ));
        }
        Ok(v)
    }

    pub fn page(&self) -> &ProcessPage {
        // SAFETY: the mapping is PROCESS_LEN >= size_of::<ProcessPage>()
        // bytes, page-aligned, lives as long as `self`, and is only read
        // through atomics. The process may change it at any time, which is
        // why everything read from it is treated as a claim.
        unsafe { &*(self.map.ptr.as_ptr() as *const ProcessPage) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_cannot_write_its_budget() {
        let b = Budget::new().unwrap();
        b.page().dev[3].share_ppm.store(250_000, Ordering::Release);
        let fd = b.reader_fd().unwrap();
        assert!(
            map(&fd, BUDGET_LEN, true).is_err(),
            "a read-only descriptor cannot be mapped writable"
        );
        let r = map(&fd, BUDGET_LEN, false).unwrap();
        // SAFETY: as in Budget::page.
        let page = unsafe { &*(r.ptr.as_ptr() as *const BudgetPage) };
        assert_eq!(page.magic.load(Ordering::Acquire), BUDGET_MAGIC);
        assert_eq!(page.dev[3].share_ppm.load(Ordering::Acquire), 250_000);
        b.page().dev[3].share_ppm.store(100_000, Ordering::Release);
        assert_eq!(
            page.dev[3].share_ppm.load(Ordering::Acquire),
            100_000,
            "shared, live"
        );
    }

    #[test]
    fn process_pages_are_checked() {
        let fd = memfd_create(c"t", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 10).unwrap();
        assert!(ProcessView::open(fd).is_err(), "too small");
        let fd = memfd_create(c"t", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, PROCESS_LEN as i64).unwrap();
        assert!(ProcessView::open(fd).is_err(), "no magic");
    }
}
