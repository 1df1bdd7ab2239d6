//! `cuGetExportTable`: the private tables the CUDA runtime asks the driver
//! for. Each is served with just the slots the runtime calls (see
//! `shared/reference/cudart-on-fake-driver`); unknown tables are refused.
//! Slot 0 of a table holds its size in bytes, except in the context-local
//! storage table, which has no size header.

use crate::context::{self, ClsDtor};
use crate::entry::{out, read, run, Res, INVALID_VALUE};
use crate::integrity::{self, DeviceId, Input};
use crate::process;
use cuda_abi::{CUcontext, CUdevice, CUresult, CUuuid};
use std::cell::UnsafeCell;
use std::ffi::c_void;

/// One table slot: a function pointer, a size, or NULL.
#[repr(transparent)]
pub struct Slot(*const c_void);
// SAFETY: slots are immutable addresses/sizes, shared read-only.
unsafe impl Sync for Slot {}

const NULL: Slot = Slot(std::ptr::null());
const fn size(slots: usize) -> Slot {
    Slot(std::ptr::without_provenance(
        slots * std::mem::size_of::<usize>(),
    ))
}

const CUDART_INTERFACE: [u8; 16] = [
    0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9,
];
const TOOLS_RUNTIME_CALLBACK_HOOKS: [u8; 16] = [
    0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74, 0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a, 0x66,
];
const TOOLS_TLS: [u8; 16] = [
    0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc,
];
const CONTEXT_LOCAL_STORAGE: [u8; 16] = [
    0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11, 0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93,
];
const CONTEXT_CHECKS: [u8; 16] = [
    0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43, 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa, 0x7e,
];
const INTEGRITY_CHECK: [u8; 16] = [
    0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b, 0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2,
];
/// Asked for by the runtime; cuBLASLt's statically linked runtime calls
/// its slot 4 (after TOOLS_TLS slot 2) before a matmul, and proceeds when
/// it reports success with nothing to add.
const UNNAMED_21318C60: [u8; 16] = [
    0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2,
];

// ---------------------------------------------------------------- CUDART_INTERFACE

/// Slot 2: the device's primary context, created if needed (not retained).
unsafe extern "C" fn get_primary_ctx(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    run("cudart[2] get_primary_context", || {
        let p = process::initialized()?;
        let d = p.device(dev)?;
        let c = crate::device::primary_ctx(p, d);
        // SAFETY: the runtime's output pointer.
        unsafe { out(pctx, process::handle_of(&c)) }
    })
}

/// Slot 12: load the JIT compilers. Nothing is compiled here, so there is nothing to load.
unsafe extern "C" fn load_compilers() -> CUresult {
    run("cudart[12] load_compilers", || Ok(()))
}

static CUDART_TABLE: [Slot; 13] = [
    size(13),
    NULL,
    Slot(get_primary_ctx as *const c_void),
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    Slot(load_compilers as *const c_void),
];

// ---------------------------------------------------------------- TOOLS_RUNTIME_CALLBACK_HOOKS

/// Scratch buffers the runtime writes its callback state into.
struct Buffer<const N: usize>(UnsafeCell<[u64; N]>);
// SAFETY: only the runtime writes into these buffers; the driver never reads them.
unsafe impl<const N: usize> Sync for Buffer<N> {}

static HOOKS_BUF1: Buffer<1024> = Buffer(UnsafeCell::new([0; 1024]));
static HOOKS_BUF2: Buffer<16> = Buffer(UnsafeCell::new([0; 16]));

unsafe extern "C" fn hooks_buffer1(p: *mut *mut c_void, n: *mut usize) {
    run("hooks[2] buffer", || {
        // SAFETY: the runtime's output pointers.
        unsafe {
            out(p, HOOKS_BUF1.0.get().cast())?;
            out(n, 1024)
        }
    });
}

unsafe extern "C" fn hooks_buffer2(p: *mut *mut c_void, n: *mut usize) {
    run("hooks[6] buffer", || {
        // SAFETY: the runtime's output pointers.
        unsafe {
            out(p, HOOKS_BUF2.0.get().cast())?;
            out(n, 14)
        }
    });
}

static HOOKS_TABLE: [Slot; 7] = [
    size(7),
    NULL,
    Slot(hooks_buffer1 as *const c_void),
    NULL,
    NULL,
    NULL,
    Slot(hooks_buffer2 as *const c_void),
];

// ---------------------------------------------------------------- TOOLS_TLS
//
// cuBLASLt's statically linked runtime calls slot 2 (tools' thread state);
// there are no tools here, so each slot succeeds with nothing to report.

unsafe extern "C" fn tls_slot1() -> CUresult {
    run("tls[1]", || Ok(()))
}
unsafe extern "C" fn tls_slot2() -> CUresult {
    run("tls[2]", || Ok(()))
}
unsafe extern "C" fn tls_slot3() -> CUresult {
    run("tls[3]", || Ok(()))
}

static TLS_TABLE: [Slot; 4] = [
    size(4),
    Slot(tls_slot1 as *const c_void),
    Slot(tls_slot2 as *const c_void),
    Slot(tls_slot3 as *const c_void),
];

// ---------------------------------------------------------------- CONTEXT_LOCAL_STORAGE (no size header)

unsafe extern "C" fn cls_put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    dtor: Option<ClsDtor>,
) -> CUresult {
    run("cls[0] put", || context::cls_put(ctx, key, value, dtor))
}

unsafe extern "C" fn cls_delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    run("cls[1] delete", || context::cls_delete(ctx, key))
}

unsafe extern "C" fn cls_get(
    value: *mut *mut c_void,
    ctx: CUcontext,
    key: *mut c_void,
) -> CUresult {
    run("cls[2] get", || {
        let v = context::cls_get(ctx, key)?;
        // SAFETY: the runtime's output pointer.
        unsafe { out(value, v) }
    })
}

static CLS_TABLE: [Slot; 4] = [
    Slot(cls_put as *const c_void),
    Slot(cls_delete as *const c_void),
    Slot(cls_get as *const c_void),
    NULL,
];

// ---------------------------------------------------------------- CONTEXT_CHECKS

/// Slot 2: a per-context check; no context here needs special handling.
unsafe extern "C" fn ctx_check(ctx: CUcontext, r1: *mut u32, r2: *mut *const c_void) -> CUresult {
    run("checks[2]", || {
        context::resolve(ctx)?;
        // SAFETY: the runtime's optional output pointers.
        unsafe {
            crate::entry::out_opt(r1, 0);
            crate::entry::out_opt(r2, std::ptr::null());
        }
        Ok(())
    })
}

/// Slot 3: a process-wide check that reports nothing to adjust (0).
unsafe extern "C" fn process_check() -> u32 {
    0
}

static CHECKS_TABLE: [Slot; 4] = [
    size(4),
    NULL,
    Slot(ctx_check as *const c_void),
    Slot(process_check as *const c_void),
];

// ---------------------------------------------------------------- INTEGRITY_CHECK

unsafe extern "C" fn integrity_check(
    version: u32,
    seconds: u64,
    result: *mut [u64; 2],
) -> CUresult {
    run("integrity[1]", || {
        let p = process::initialized()?;
        let devices: Vec<DeviceId> = p
            .devices()?
            .iter()
            .map(|d| DeviceId {
                uuid: d.uuid(),
                pci_domain: 0,
                pci_bus: crate::device::pci_bus(d.ordinal),
                pci_device: 0,
            })
            .collect();
        let input = Input {
            driver_version: crate::config::driver_version() as u32,
            version,
            pid: std::process::id(),
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() } as u32,
            cudart_table: CUDART_TABLE.as_ptr() as u64,
            integrity_table: INTEGRITY_TABLE.as_ptr() as u64,
            integrity_fn: INTEGRITY_TABLE[1].0 as u64,
            seconds,
        };
        // SAFETY: the runtime's output buffer of two u64.
        unsafe { out(result, integrity::answer(&input, &devices)) }
    })
}

static INTEGRITY_TABLE: [Slot; 3] = [size(3), Slot(integrity_check as *const c_void), NULL];

unsafe extern "C" fn un1() -> CUresult {
    run("unnamed[1]", || Ok(()))
}
unsafe extern "C" fn un2() -> CUresult {
    run("unnamed[2]", || Ok(()))
}
unsafe extern "C" fn un3() -> CUresult {
    run("unnamed[3]", || Ok(()))
}
unsafe extern "C" fn un4() -> CUresult {
    run("unnamed[4]", || Ok(()))
}
unsafe extern "C" fn un5() -> CUresult {
    run("unnamed[5]", || Ok(()))
}
unsafe extern "C" fn un6() -> CUresult {
    run("unnamed[6]", || Ok(()))
}
unsafe extern "C" fn un7() -> CUresult {
    run("unnamed[7]", || Ok(()))
}
unsafe extern "C" fn un8() -> CUresult {
    run("unnamed[8]", || Ok(()))
}
unsafe extern "C" fn un9() -> CUresult {
    run("unnamed[9]", || Ok(()))
}
unsafe extern "C" fn un10() -> CUresult {
    run("unnamed[10]", || Ok(()))
}
unsafe extern "C" fn un11() -> CUresult {
    run("unnamed[11]", || Ok(()))
}
unsafe extern "C" fn un12() -> CUresult {
    run("unnamed[12]", || Ok(()))
}
unsafe extern "C" fn un13() -> CUresult {
    run("unnamed[13]", || Ok(()))
}
unsafe extern "C" fn un14() -> CUresult {
    run("unnamed[14]", || Ok(()))
}
unsafe extern "C" fn un15() -> CUresult {
    run("unnamed[15]", || Ok(()))
}
static UNNAMED_TABLE: [Slot; 64] = {
    let mut t = [NULL; 64];
    t[1] = Slot(un1 as *const c_void);
    t[2] = Slot(un2 as *const c_void);
    t[3] = Slot(un3 as *const c_void);
    t[4] = Slot(un4 as *const c_void);
    t[5] = Slot(un5 as *const c_void);
    t[6] = Slot(un6 as *const c_void);
    t[7] = Slot(un7 as *const c_void);
    t[8] = Slot(un8 as *const c_void);
    t[9] = Slot(un9 as *const c_void);
    t[10] = Slot(un10 as *const c_void);
    t[11] = Slot(un11 as *const c_void);
    t[12] = Slot(un12 as *const c_void);
    t[13] = Slot(un13 as *const c_void);
    t[14] = Slot(un14 as *const c_void);
    t[15] = Slot(un15 as *const c_void);
    t
};

fn table_for(id: &[u8; 16]) -> Option<*const c_void> {
    let t: &[Slot] = match *id {
        CUDART_INTERFACE => &CUDART_TABLE,
        TOOLS_RUNTIME_CALLBACK_HOOKS => &HOOKS_TABLE,
        TOOLS_TLS => &TLS_TABLE,
        CONTEXT_LOCAL_STORAGE => &CLS_TABLE,
        CONTEXT_CHECKS => &CHECKS_TABLE,
        INTEGRITY_CHECK => &INTEGRITY_TABLE,
        UNNAMED_21318C60 => &UNNAMED_TABLE,
        _ => return None,
    };
    Some(t.as_ptr().cast())
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

export! {
    fn cuGetExportTable(table: *mut *const c_void, id: *const CUuuid) {
        // SAFETY: the caller's UUID.
        let u = unsafe { read(id)? }.bytes;
        if table.is_null() {
            return Err(INVALID_VALUE);
        }
        let t: Res<*const c_void> = table_for(&u).ok_or(INVALID_VALUE);
        if crate::config::log_enabled() {
            let what = if t.is_err() { "unknown table, refused" } else { "served" };
            crate::config::log(format_args!("cuGetExportTable({}): {what}", uuid_string(&u)));
        }
        // SAFETY: the caller's output pointer (checked non-NULL).
        unsafe { out(table, t.unwrap_or(std::ptr::null()))? };
        t.map(|_| ())
    }
}
