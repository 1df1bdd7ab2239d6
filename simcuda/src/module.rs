//! Modules and libraries loaded from fatbins (kept, not executed), kernels
//! and functions, their attributes, `__device__` globals, occupancy.

use crate::entry::{cstr, out, out_opt, Res, INVALID_HANDLE, INVALID_VALUE};
use crate::fatbin::{self, Symbols};
use crate::memory::{self, Alloc, Kind};
use crate::process::{self, handle_of, Handle, Magic};
use cuda_abi::{
    CUdevice, CUdeviceptr, CUfunction, CUkernel, CUlaunchAttribute, CUlaunchConfig, CUlibrary,
    CUmodule, CUresult, CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex};

pub struct Module {
    magic: Magic,
    syms: Symbols,
    globals: Mutex<HashMap<String, (u64, u64)>>,
    funcs: Mutex<HashMap<String, Arc<Function>>>,
}

impl Handle for Module {
    const MAGIC: u32 = 0x3D0D_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

pub struct Function {
    magic: Magic,
    pub name: CString,
    /// `sim_spin` kernels run for the nanoseconds in their first argument.
    pub spin: bool,
    /// Passed to simgpu with each launch: a hash of the name.
    pub tag: u64,
    module: usize,
    attrs: Mutex<HashMap<i32, i32>>,
}

impl Handle for Function {
    const MAGIC: u32 = 0xF00C_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

/// FNV-1a of a kernel name (the work tag).
fn name_hash(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Function attribute defaults (CUfunction_attribute).
fn default_attr(a: i32) -> Option<i32> {
    Some(match a {
        0 => 1024,   // MAX_THREADS_PER_BLOCK
        1..=3 => 0,  // SHARED/CONST/LOCAL_SIZE_BYTES
        4 => 32,     // NUM_REGS
        5 | 6 => 90, // PTX_VERSION, BINARY_VERSION
        7 => 0,      // CACHE_MODE_CA
        8 => 49152,  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        9 => -1,     // PREFERRED_SHARED_MEMORY_CARVEOUT
        10..=17 => 0,
        _ => return None,
    })
}

impl Function {
    pub fn attr(&self, a: i32) -> Res<i32> {
        let v = default_attr(a).ok_or(INVALID_VALUE)?;
        Ok(self
            .attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&a)
            .copied()
            .unwrap_or(v))
    }
    fn set_attr(&self, a: i32, v: i32) -> Res {
        match a {
            8 if (0..=232448).contains(&v) => {}
            9 if (-1..=100).contains(&v) => {}
            10..=15 => {}
            _ => return Err(INVALID_VALUE),
        }
        self.attrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a, v);
        Ok(())
    }
}

fn load(image: *const c_void) -> Res<Arc<Module>> {
    let p = process::initialized()?;
    if image.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller passes a fatbin wrapper, fatbin or cubin, per the API contract.
    let syms = unsafe { fatbin::read_image(image.cast()) };
    Ok(p.modules.insert(Module {
        magic: Magic::new(Module::MAGIC),
        syms,
        globals: Mutex::new(HashMap::new()),
        funcs: Mutex::new(HashMap::new()),
    }))
}

fn unload(h: *mut c_void) -> Res {
    let p = process::initialized()?;
    let m = p.modules.remove(h)?;
    for (_, f) in m.funcs.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        let _ = p.functions.remove(handle_of(&f));
    }
    for (_, (base, len)) in m.globals.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        p.mem.remove(base);
        memory::unmap(base, len as usize);
    }
    Ok(())
}

/// The function `name` of module `h` (one handle per name and module).
fn function(h: *mut c_void, name: *const c_char) -> Res<Arc<Function>> {
    let p = process::initialized()?;
    let m = p.modules.get(h)?;
    // SAFETY: NUL-terminated name from the caller.
    let n = unsafe { cstr(name)? };
    if let Some(fs) = &m.syms.functions {
        if !fs.contains(n) {
            return Err(CUresult::ERROR_NOT_FOUND);
        }
    }
    let mut funcs = m.funcs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = funcs.get(n) {
        return Ok(f.clone());
    }
    let f = p.functions.insert(Function {
        magic: Magic::new(Function::MAGIC),
        name: CString::new(n).map_err(|_| INVALID_VALUE)?,
        spin: n.contains("sim_spin"),
        tag: name_hash(n.as_bytes()),
        module: h as usize,
        attrs: Mutex::new(HashMap::new()),
    });
    funcs.insert(n.to_string(), f.clone());
    Ok(f)
}

/// A `__device__` variable: host-backed storage sized from the cubin's
/// symbol table, registered as device memory (not charged: module memory is
/// context overhead). `CUDA_ERROR_NOT_FOUND` if the image could not tell.
fn global(dptr: *mut CUdeviceptr, bytes: *mut usize, h: *mut c_void, name: *const c_char) -> Res {
    let p = process::initialized()?;
    let m = p.modules.get(h)?;
    // SAFETY: NUL-terminated name from the caller.
    let n = unsafe { cstr(name)? };
    let size = *m.syms.globals.get(n).ok_or(CUresult::ERROR_NOT_FOUND)?;
    let mut g = m.globals.lock().unwrap_or_else(|e| e.into_inner());
    let (base, _) = match g.get(n) {
        Some(v) => *v,
        None => {
            let len = size.max(1).div_ceil(4096) * 4096;
            let b = memory::map_anon(len as usize, false)? as u64;
            let dev = crate::context::current().map(|c| c.device).unwrap_or(0);
            p.mem.insert(Alloc {
                base: b,
                size: size.max(1),
                mapped: 0,
                charged: 0,
                device: dev,
                ctx: 0,
                ctx_id: 0,
                kind: Kind::Global,
            });
            g.insert(n.to_string(), (b, len));
            (b, len)
        }
    };
    // SAFETY: optional output pointers.
    unsafe {
        out_opt(dptr, base);
        out_opt(bytes, size as usize);
    }
    Ok(())
}

export! {
    fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) {
        crate::context::current()?;
        if module.is_null() {
            return Err(INVALID_VALUE);
        }
        let m = load(image)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(module, handle_of(&m)) }
    }
}

export! {
    /// A module from a file: a cubin, a fatbin, or a host object's fatbin
    /// wrapper image as `nvcc -fatbin`/`-cubin` writes them.
    fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) {
        crate::context::current()?;
        if module.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: NUL-terminated file name from the caller.
        let path = unsafe { cstr(fname)? };
        let bytes = std::fs::read(path).map_err(|_| CUresult::ERROR_FILE_NOT_FOUND)?;
        if bytes.len() < 16 {
            return Err(CUresult::ERROR_INVALID_IMAGE);
        }
        // Parsed while `bytes` lives (the module keeps what it read).
        let m = load(bytes.as_ptr().cast())?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(module, handle_of(&m)) }
    }
}

export! {
    fn cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, n: u32, opts: *mut c_void, vals: *mut *mut c_void) {
        let _ = (n, opts, vals); // JIT options: nothing is compiled here
        crate::context::current()?;
        if module.is_null() {
            return Err(INVALID_VALUE);
        }
        let m = load(image)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(module, handle_of(&m)) }
    }
}

export! {
    fn cuModuleLoadFatBinary(module: *mut CUmodule, fat: *const c_void) {
        crate::context::current()?;
        if module.is_null() {
            return Err(INVALID_VALUE);
        }
        let m = load(fat)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(module, handle_of(&m)) }
    }
}

export! {
    fn cuModuleUnload(module: CUmodule) { unload(module) }
}

export! {
    fn cuModuleGetFunction(func: *mut CUfunction, module: CUmodule, name: *const c_char) {
        if func.is_null() {
            return Err(INVALID_VALUE);
        }
        let f = function(module, name)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(func, handle_of(&f)) }
    }
}

export! {
    fn cuModuleGetGlobal_v2(dptr: *mut CUdeviceptr, bytes: *mut usize, module: CUmodule, name: *const c_char) { global(dptr, bytes, module, name) }
}

export! {
    /// Modules are "loaded" eagerly here (nothing to load).
    fn cuModuleGetLoadingMode(mode: *mut u32) {
        // SAFETY: caller's output pointer; CU_MODULE_EAGER_LOADING = 1.
        unsafe { out(mode, 1) }
    }
}

export! {
    fn cuLibraryLoadData(lib: *mut CUlibrary, code: *const c_void, jit_opts: *mut c_void, jit_vals: *mut *mut c_void, njit: u32, lib_opts: *mut c_void, lib_vals: *mut *mut c_void, nlib: u32) {
        let _ = (jit_opts, jit_vals, njit, lib_opts, lib_vals, nlib); // options change nothing here
        if lib.is_null() {
            return Err(INVALID_VALUE);
        }
        let m = load(code)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(lib, handle_of(&m)) }
    }
}

export! {
    fn cuLibraryUnload(lib: CUlibrary) { unload(lib) }
}

export! {
    fn cuLibraryGetKernel(kernel: *mut CUkernel, lib: CUlibrary, name: *const c_char) {
        if kernel.is_null() {
            return Err(INVALID_VALUE);
        }
        let f = function(lib, name)?;
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(kernel, handle_of(&f)) }
    }
}

export! {
    /// A library and its module are the same object here.
    fn cuLibraryGetModule(module: *mut CUmodule, lib: CUlibrary) {
        let m = process::initialized()?.modules.get(lib)?;
        // SAFETY: caller's output pointer.
        unsafe { out(module, handle_of(&m)) }
    }
}

export! {
    fn cuLibraryGetGlobal(dptr: *mut CUdeviceptr, bytes: *mut usize, lib: CUlibrary, name: *const c_char) { global(dptr, bytes, lib, name) }
}

export! {
    /// Kernels and functions share one object: a kernel is usable as a function in every context.
    fn cuKernelGetFunction(func: *mut CUfunction, kernel: CUkernel) {
        let f = process::initialized()?.functions.get(kernel)?;
        crate::context::current()?;
        // SAFETY: caller's output pointer.
        unsafe { out(func, handle_of(&f)) }
    }
}

export! {
    fn cuKernelGetLibrary(lib: *mut CUlibrary, kernel: CUkernel) {
        let f = process::initialized()?.functions.get(kernel)?;
        // SAFETY: caller's output pointer.
        unsafe { out(lib, f.module as CUlibrary) }
    }
}

export! {
    fn cuFuncGetModule(module: *mut CUmodule, func: CUfunction) {
        let f = process::initialized()?.functions.get(func)?;
        // SAFETY: caller's output pointer.
        unsafe { out(module, f.module as CUmodule) }
    }
}

fn get_name(name: *mut *const c_char, h: *mut c_void) -> Res {
    let f = process::initialized()?.functions.get(h)?;
    // SAFETY: caller's output pointer; the string lives as long as the function object.
    unsafe { out(name, f.name.as_ptr()) }
}

export! {
    fn cuKernelGetName(name: *mut *const c_char, kernel: CUkernel) { get_name(name, kernel) }
}

export! {
    fn cuFuncGetName(name: *mut *const c_char, func: CUfunction) { get_name(name, func) }
}

export! {
    fn cuFuncGetAttribute(v: *mut i32, attrib: i32, func: CUfunction) {
        let f = process::initialized()?.functions.get(func)?;
        let x = f.attr(attrib)?;
        // SAFETY: caller's output pointer.
        unsafe { out(v, x) }
    }
}

export! {
    fn cuKernelGetAttribute(v: *mut i32, attrib: i32, kernel: CUkernel, dev: CUdevice) {
        let p = process::initialized()?;
        p.device(dev)?;
        let x = p.functions.get(kernel)?.attr(attrib)?;
        // SAFETY: caller's output pointer.
        unsafe { out(v, x) }
    }
}

export! {
    fn cuFuncSetAttribute(func: CUfunction, attrib: i32, value: i32) {
        process::initialized()?.functions.get(func)?.set_attr(attrib, value)
    }
}

export! {
    fn cuKernelSetAttribute(attrib: i32, value: i32, kernel: CUkernel, dev: CUdevice) {
        let p = process::initialized()?;
        p.device(dev)?;
        p.functions.get(kernel)?.set_attr(attrib, value)
    }
}

export! {
    /// Cache preferences have no effect on the simulated device; they are validated.
    fn cuFuncSetCacheConfig(func: CUfunction, config: u32) {
        process::initialized()?.functions.get(func)?;
        if config > 3 { Err(INVALID_VALUE) } else { Ok(()) }
    }
}

export! {
    fn cuKernelSetCacheConfig(kernel: CUkernel, config: u32, dev: CUdevice) {
        let p = process::initialized()?;
        p.device(dev)?;
        p.functions.get(kernel)?;
        if config > 3 { Err(INVALID_VALUE) } else { Ok(()) }
    }
}

/// Blocks per SM for a block size and dynamic shared memory (threads,
/// block-count and shared-memory limits of an H100 SM; registers at the
/// default 32 per thread never bind first).
fn occupancy(f: &Function, block: i32, dyn_smem: usize) -> Res<i32> {
    if block <= 0 {
        return Err(INVALID_VALUE);
    }
    if block > f.attr(0)? {
        return Ok(0);
    }
    let warps = (block + 31) / 32;
    let by_threads = 64 / warps;
    let smem = dyn_smem as i64 + i64::from(f.attr(1)?) + 1024;
    let by_smem = if smem > 0 {
        (233_472 / smem) as i32
    } else {
        32
    };
    Ok(by_threads.min(32).min(by_smem))
}

export! {
    fn cuOccupancyMaxActiveBlocksPerMultiprocessor(n: *mut i32, func: CUfunction, block: i32, dyn_smem: usize) {
        let f = process::initialized()?.functions.get(func)?;
        let v = occupancy(&f, block, dyn_smem)?;
        // SAFETY: caller's output pointer.
        unsafe { out(n, v) }
    }
}

export! {
    fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n: *mut i32, func: CUfunction, block: i32, dyn_smem: usize, flags: u32) {
        let f = process::initialized()?.functions.get(func)?;
        if flags > 1 {
            return Err(INVALID_VALUE);
        }
        let v = occupancy(&f, block, dyn_smem)?;
        // SAFETY: caller's output pointer.
        unsafe { out(n, v) }
    }
}

export! {
    fn cuOccupancyAvailableDynamicSMemPerBlock(size: *mut usize, func: CUfunction, blocks: i32, block: i32) {
        let f = process::initialized()?.functions.get(func)?;
        if blocks <= 0 || block <= 0 {
            return Err(INVALID_VALUE);
        }
        let per_block = (233_472 / blocks as usize).saturating_sub(1024).min(232_448).saturating_sub(f.attr(1)? as usize);
        // SAFETY: caller's output pointer.
        unsafe { out(size, per_block) }
    }
}

// CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_{WIDTH,HEIGHT,DEPTH} are 11..=13,
// NON_PORTABLE_CLUSTER_SIZE_ALLOWED 14.

/// `CUoccupancyB2DSize`: dynamic shared memory for a block size.
pub type B2DSize = Option<unsafe extern "C" fn(block: i32) -> usize>;

export! {
    /// The block size with the most threads resident per SM (the largest
    /// such, as the driver's search prefers), and the grid that fills the
    /// device with it.
    fn cuOccupancyMaxPotentialBlockSize(min_grid: *mut i32, block: *mut i32, func: CUfunction, smem_of: B2DSize, dyn_smem: usize, limit: i32) {
        let f = process::initialized()?.functions.get(func)?;
        let most = f.attr(0)?;
        let limit = if limit <= 0 { most } else { limit.min(most) };
        let mut best = (0, 0);
        let mut b = limit / 32 * 32;
        while b >= 32 {
            // SAFETY: the caller's callback, called with a block size as the API says.
            let smem = smem_of.map_or(dyn_smem, |cb| unsafe { cb(b) });
            let per_sm = occupancy(&f, b, smem)?;
            if per_sm * b > best.0 * best.1 {
                best = (per_sm, b);
            }
            b -= 32;
        }
        let (per_sm, b) = best;
        // SAFETY: caller's output pointers.
        unsafe {
            // MULTIPROCESSOR_COUNT, as cuDeviceGetAttribute reports it.
            out(min_grid, per_sm * crate::device::attribute(16, 0).unwrap_or(132))?;
            out(block, b)
        }
    }
}

/// An H100's graphics processing clusters (132 SMs): a thread block cluster
/// runs within one GPC.
const GPC_SMS: [i32; 8] = [18, 18, 18, 18, 18, 18, 18, 6];

/// The cluster shape of a launch: its cluster-dimension attribute, else the
/// function's compile-time one, else 1x1x1.
///
/// # Safety
/// `cfg.attrs` points to `cfg.numAttrs` attributes (or is unused when 0).
unsafe fn cluster_of(cfg: &CUlaunchConfig, f: &Function) -> Res<i32> {
    let attrs: &[CUlaunchAttribute] = if cfg.numAttrs == 0 || cfg.attrs.is_null() {
        &[]
    } else {
        // SAFETY: per the function contract.
        unsafe { std::slice::from_raw_parts(cfg.attrs, cfg.numAttrs as usize) }
    };
    let dims = match attrs
        .iter()
        .find(|a| a.id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
    {
        Some(a) => {
            let d = |i: usize| {
                u32::from_le_bytes(a.value[4 * i..4 * i + 4].try_into().unwrap_or([0; 4]))
            };
            [d(0), d(1), d(2)]
        }
        None => {
            let d = |a: i32| f.attr(a).map(|v| v.max(1) as u32);
            [d(11)?, d(12)?, d(13)?]
        }
    };
    let grid = [cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ];
    if dims.contains(&0) || grid.iter().zip(dims).any(|(g, d)| *g % d != 0) {
        return Err(CUresult::ERROR_INVALID_CLUSTER_SIZE);
    }
    let size = dims.iter().map(|d| u64::from(*d)).product::<u64>();
    let most = if f.attr(14)? != 0 { 16 } else { 8 };
    if size > most {
        return Err(CUresult::ERROR_INVALID_CLUSTER_SIZE);
    }
    Ok(size as i32)
}

fn block_of(cfg: &CUlaunchConfig) -> Res<i32> {
    let b = u64::from(cfg.blockDimX) * u64::from(cfg.blockDimY) * u64::from(cfg.blockDimZ);
    i32::try_from(b).map_err(|_| INVALID_VALUE)
}

export! {
    /// The largest cluster a launch of `func` with this configuration could
    /// use: 8 blocks (portable), 16 where the function allows non-portable
    /// sizes, 0 if its blocks cannot run at all.
    fn cuOccupancyMaxPotentialClusterSize(size: *mut i32, func: CUfunction, config: *const CUlaunchConfig) {
        let f = process::initialized()?.functions.get(func)?;
        // SAFETY: the caller's configuration, when given.
        let cfg = unsafe { config.as_ref() }.ok_or(INVALID_VALUE)?;
        let blocks = occupancy(&f, block_of(cfg)?, cfg.sharedMemBytes as usize)?;
        let v = match blocks {
            0 => 0,
            _ if f.attr(14)? != 0 => 16,
            _ => 8,
        };
        // SAFETY: caller's output pointer.
        unsafe { out(size, v) }
    }
}

export! {
    /// How many clusters of this launch fit on the device at once: each GPC
    /// holds as many as its SMs have room for blocks.
    fn cuOccupancyMaxActiveClusters(n: *mut i32, func: CUfunction, config: *const CUlaunchConfig) {
        let f = process::initialized()?.functions.get(func)?;
        // SAFETY: the caller's configuration, when given.
        let cfg = unsafe { config.as_ref() }.ok_or(INVALID_VALUE)?;
        // SAFETY: the configuration's attribute array, per the API contract.
        let size = unsafe { cluster_of(cfg, &f) }?;
        let per_sm = occupancy(&f, block_of(cfg)?, cfg.sharedMemBytes as usize)?;
        let v = GPC_SMS.iter().map(|g| g * per_sm / size).sum::<i32>();
        // SAFETY: caller's output pointer.
        unsafe { out(n, v) }
    }
}

/// The function object behind a `CUfunction`/`CUkernel` handle.
pub fn resolve(h: *mut c_void) -> Res<Arc<Function>> {
    process::initialized()?.functions.get_or(h, INVALID_HANDLE)
}
