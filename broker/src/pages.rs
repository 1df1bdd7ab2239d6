//! The shared pages, on the broker's side (its FFI edge): a budget page per
//! process (a memfd the broker writes; the process gets a read-only
//! descriptor to it, and the memfd is sealed against new writable mappings,
//! so reopening it through `/proc` gives the process nothing), and the
//! process's own page (which it sends; mapped here read-only, and accepted
//! only if sealed against shrinking: a page truncated under the broker's
//! mapping would kill the broker with SIGBUS on its next read).

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
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

/// A process's budget page, as the broker writes it (the broker keeps only
/// its mapping, no descriptor).
pub struct Budget {
    map: Mapping,
}

impl Budget {
    /// A new page, and a read-only descriptor of it for the process: it
    /// cannot map it writable (nor can a reopen of it, the memfd is sealed),
    /// so it cannot change its own budget.
    pub fn new() -> io::Result<(Budget, OwnedFd)> {
        let fd = memfd_create(
            c"tslice-budget",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, BUDGET_LEN as i64).map_err(io::Error::from)?;
        let map = map(&fd, BUDGET_LEN, true)?;
        // The broker's mapping stays writable; nobody can make another one
        // (F_SEAL_FUTURE_WRITE, Linux 5.1+), resize it, or lift the seals.
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_FUTURE_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("cannot seal a budget page ({e}); tslice-broker needs Linux 5.1 or later"),
            )
        })?;
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let b = Budget { map };
        let p = b.page();
        p.version.store(PAGE_VERSION, Ordering::Relaxed);
        for d in &p.dev {
            d.share_ppm
                .store(crate::state::SHORT_OF_WHOLE_PPM, Ordering::Relaxed);
            d.mem_limit.store(u64::MAX, Ordering::Relaxed);
        }
        p.magic.store(BUDGET_MAGIC, Ordering::Release);
        Ok((b, OwnedFd::from(reader)))
    }

    pub fn page(&self) -> &BudgetPage {
        // SAFETY: the mapping is BUDGET_LEN >= size_of::<BudgetPage>() bytes,
        // page-aligned, lives as long as `self`, and is only accessed
        // through atomics (zero is a valid value of each).
        unsafe { &*(self.map.ptr.as_ptr() as *const BudgetPage) }
    }

    /// Changes the page as one update: a reader that sees `generation`
    /// odd, or changed across its reads, reads again (a sequence lock; the
    /// broker is the page's only writer, under its state lock).
    pub fn write<R>(&self, f: impl FnOnce(&BudgetPage) -> R) -> R {
        let p = self.page();
        p.generation.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        let r = f(p);
        p.generation.fetch_add(1, Ordering::Release);
        r
    }
}

/// A process's own page, mapped read-only.
pub struct ProcessView {
    map: Mapping,
}

impl ProcessView {
    /// Maps a page a process sent; refuses one of the wrong size or kind,
    /// one its sender could still shrink, and one not in ordinary shared
    /// memory (tmpfs): a memfd of huge pages (hugetlbfs) can have a hole
    /// punched in it, sealed or not, and a read of the hole with no huge
    /// page free would be a SIGBUS in the broker.
    pub fn open(fd: OwnedFd) -> io::Result<ProcessView> {
        let fs = nix::sys::statfs::fstatfs(&fd).map_err(io::Error::from)?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the process page is not in ordinary shared memory (file system type {:#x}, not tmpfs)",
                    fs.filesystem_type().0
                ),
            ));
        }
        let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS)
            .map(SealFlag::from_bits_truncate)
            .unwrap_or(SealFlag::empty());
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the process page is not a memfd sealed against shrinking (F_SEAL_SHRINK)",
            ));
        }
        let len = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(io::Error::from)?
            .st_size as usize;
        if len != PROCESS_LEN {
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
        let (b, fd) = Budget::new().unwrap();
        b.page().dev[3].share_ppm.store(250_000, Ordering::Release);
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

    fn sealed(len: usize, seals: SealFlag) -> OwnedFd {
        let fd = memfd_create(
            c"t",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, len as i64).unwrap();
        fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
        fd
    }

    fn with_magic(fd: &OwnedFd) {
        let m = map(fd, PROCESS_LEN, true).unwrap();
        // SAFETY: as in ProcessView::page; the test writes through atomics.
        let p = unsafe { &*(m.ptr.as_ptr() as *const ProcessPage) };
        p.version.store(PAGE_VERSION, Ordering::Relaxed);
        p.magic.store(PROCESS_MAGIC, Ordering::Release);
    }

    #[test]
    fn process_pages_are_checked() {
        let shrink = SealFlag::F_SEAL_SHRINK;
        assert!(ProcessView::open(sealed(10, shrink)).is_err(), "too small");
        let fd = sealed(2 * PROCESS_LEN, shrink);
        with_magic(&fd);
        assert!(ProcessView::open(fd).is_err(), "too large");
        assert!(
            ProcessView::open(sealed(PROCESS_LEN, shrink)).is_err(),
            "no magic"
        );
        let fd = sealed(PROCESS_LEN, shrink);
        with_magic(&fd);
        assert!(ProcessView::open(fd).is_ok());
        // Unsealed: the sender could truncate it under the broker's mapping.
        let fd = sealed(PROCESS_LEN, SealFlag::F_SEAL_GROW);
        with_magic(&fd);
        let e = ProcessView::open(fd).err().unwrap().to_string();
        assert!(e.contains("F_SEAL_SHRINK"), "{e}");
        let fd = memfd_create(c"t", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, PROCESS_LEN as i64).unwrap();
        with_magic(&fd);
        assert!(ProcessView::open(fd).is_err(), "no seals at all");
        // A memfd of huge pages (creating one needs no huge page free).
        let fd = memfd_create(
            c"t",
            MemFdCreateFlag::MFD_CLOEXEC
                | MemFdCreateFlag::MFD_ALLOW_SEALING
                | MemFdCreateFlag::MFD_HUGETLB,
        )
        .expect("a hugetlbfs memfd (the kernel's CONFIG_HUGETLBFS)");
        let e = ProcessView::open(fd).err().unwrap().to_string();
        assert!(e.contains("not tmpfs"), "{e}");
    }

    #[test]
    fn a_reopened_budget_page_cannot_be_mapped_writable() {
        let (b, reader) = Budget::new().unwrap();
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", reader.as_raw_fd()))
            .unwrap();
        assert!(
            map(&rw, BUDGET_LEN, true).is_err(),
            "sealed against new writable mappings"
        );
        assert!(nix::unistd::ftruncate(&rw, 0).is_err(), "and resizing");
        // The broker's own mapping still writes.
        b.write(|p| p.dev[0].share_ppm.store(5, Ordering::Relaxed));
        assert_eq!(b.page().generation.load(Ordering::Relaxed) % 2, 0);
    }
}
