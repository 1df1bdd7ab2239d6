//! Devices: enumeration, names, attributes (an H100 SXM table), UUIDs, PCI
//! ids, peer queries, memory pools per device, primary contexts.

use crate::context::{self, Ctx};
use crate::entry::{cstr, out, write_cstr, Res, INVALID_VALUE};
use crate::pool::{self, Pool};
use crate::process::{self, handle_of, Process};
use cuda_abi::{CUcontext, CUdevice, CUmemoryPool, CUresult, CUuuid};
use std::ffi::c_char;
use std::sync::{Arc, Mutex, OnceLock};

pub const NAME: &str = simgpu::DEVICE_NAME;

/// One simulated device as this process sees it.
pub struct Device {
    pub ordinal: i32,
    pub sim: simgpu::Device,
    pub primary: Mutex<Primary>,
    default_pool: OnceLock<Arc<Pool>>,
    current_pool: Mutex<Option<Arc<Pool>>>,
}

/// The device's primary context: retained by reference count.
#[derive(Default)]
pub struct Primary {
    pub refs: u32,
    pub flags: u32,
    pub ctx: Option<Arc<Ctx>>,
}

impl Device {
    pub fn uuid(&self) -> [u8; 16] {
        self.sim.uuid()
    }
    pub fn default_pool(&self, p: &Process) -> Arc<Pool> {
        self.default_pool
            .get_or_init(|| pool::create(p, self.ordinal, None))
            .clone()
    }
    pub fn current_pool(&self, p: &Process) -> Arc<Pool> {
        let cur = self
            .current_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        cur.unwrap_or_else(|| self.default_pool(p))
    }
}

/// Opens every configured device (called once by `cuInit`).
pub fn open_all() -> Result<Vec<Device>, CUresult> {
    let cfg = simgpu::Config::from_env().map_err(|msg| {
        crate::config::log(format_args!("cuInit: {msg}"));
        CUresult::ERROR_INVALID_VALUE
    })?;
    (0..cfg.devices)
        .map(|i| {
            let sim = simgpu::Device::open(&cfg, i).map_err(|e| {
                crate::config::log(format_args!(
                    "cuInit: cannot open simulated device {i} in {}: {e}",
                    cfg.dir.display()
                ));
                CUresult::ERROR_NO_DEVICE
            })?;
            Ok(Device {
                ordinal: i as i32,
                sim,
                primary: Mutex::new(Primary::default()),
                default_pool: OnceLock::new(),
                current_pool: Mutex::new(None),
            })
        })
        .collect()
}

/// PCI bus number of a device (distinct per device, below 256).
pub fn pci_bus(ordinal: i32) -> i32 {
    simgpu::pci_bus(ordinal as u32) as i32
}

/// The value of a device attribute, `None` for an unknown attribute.
pub fn attribute(attr: i32, ordinal: i32) -> Option<i32> {
    Some(match attr {
        1 => 1024,                     // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,                 // MAX_BLOCK_DIM_X/Y
        4 => 64,                       // MAX_BLOCK_DIM_Z
        5 => i32::MAX,                 // MAX_GRID_DIM_X
        6 | 7 => 65535,                // MAX_GRID_DIM_Y/Z
        8 => 49152,                    // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                    // TOTAL_CONSTANT_MEMORY
        10 => 32,                      // WARP_SIZE
        11 => i32::MAX,                // MAX_PITCH
        12 => 65536,                   // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,               // CLOCK_RATE (kHz)
        14 => 512,                     // TEXTURE_ALIGNMENT
        15 => 1,                       // GPU_OVERLAP
        16 => 132,                     // MULTIPROCESSOR_COUNT
        17 | 18 => 0,                  // KERNEL_EXEC_TIMEOUT, INTEGRATED
        19 => 1,                       // CAN_MAP_HOST_MEMORY
        20 => 0,                       // COMPUTE_MODE default
        21 => 131072,                  // TEXTURE1D_WIDTH
        22 => 131072,                  // TEXTURE2D_WIDTH
        23 => 65536,                   // TEXTURE2D_HEIGHT
        24..=26 => 16384,              // TEXTURE3D
        27 | 28 => 32768,              // TEXTURE2D_LAYERED W/H
        29 => 2048,                    // TEXTURE2D_LAYERED_LAYERS
        30 => 512,                     // SURFACE_ALIGNMENT
        31 => 1,                       // CONCURRENT_KERNELS
        32 => 1,                       // ECC_ENABLED
        33 => pci_bus(ordinal),        // PCI_BUS_ID
        34 => 0,                       // PCI_DEVICE_ID
        35 => 0,                       // TCC_DRIVER
        36 => 2_619_000,               // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                    // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 << 20,                // L2_CACHE_SIZE
        39 => 2048,                    // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 3,                       // ASYNC_ENGINE_COUNT
        41 => 1,                       // UNIFIED_ADDRESSING
        42 => 32768,                   // TEXTURE1D_LAYERED_WIDTH
        43 => 2048,                    // TEXTURE1D_LAYERED_LAYERS
        44 => 1,                       // CAN_TEX2D_GATHER
        45 | 46 => 32768,              // TEXTURE2D_GATHER
        47 | 48 => 8192,               // TEXTURE3D alternate W/H
        49 => 32768,                   // TEXTURE3D alternate D
        50 => 0,                       // PCI_DOMAIN_ID
        51 => 32,                      // TEXTURE_PITCH_ALIGNMENT
        52 | 53 => 32768,              // TEXTURECUBEMAP(_LAYERED)_WIDTH
        54 => 2046,                    // TEXTURECUBEMAP_LAYERED_LAYERS
        55 => 32768,                   // SURFACE1D_WIDTH
        56 => 131072,                  // SURFACE2D_WIDTH
        57 => 65536,                   // SURFACE2D_HEIGHT
        58..=60 => 16384,              // SURFACE3D
        61 => 32768,                   // SURFACE1D_LAYERED_WIDTH
        62 => 2048,                    // SURFACE1D_LAYERED_LAYERS
        63 | 64 => 32768,              // SURFACE2D_LAYERED W/H
        65 => 2048,                    // SURFACE2D_LAYERED_LAYERS
        66 | 67 => 32768,              // SURFACECUBEMAP(_LAYERED)_WIDTH
        68 => 2046,                    // SURFACECUBEMAP_LAYERED_LAYERS
        69 => 1 << 28,                 // TEXTURE1D_LINEAR_WIDTH
        70 => 131072,                  // TEXTURE2D_LINEAR_WIDTH
        71 => 65000,                   // TEXTURE2D_LINEAR_HEIGHT
        72 => 2_097_120,               // TEXTURE2D_LINEAR_PITCH
        73 | 74 => 32768,              // TEXTURE2D_MIPMAPPED
        75 => 9,                       // COMPUTE_CAPABILITY_MAJOR
        76 => 0,                       // COMPUTE_CAPABILITY_MINOR
        77 => 32768,                   // TEXTURE1D_MIPMAPPED_WIDTH
        78..=80 => 1,                  // STREAM_PRIORITIES, GLOBAL/LOCAL L1
        81 => 233472,                  // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                   // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,                       // MANAGED_MEMORY
        84 => 0,                       // MULTI_GPU_BOARD
        85 => ordinal,                 // MULTI_GPU_BOARD_GROUP_ID
        86 => 0,                       // HOST_NATIVE_ATOMIC_SUPPORTED
        87 => 2,                       // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        88 => 0,                       // PAGEABLE_MEMORY_ACCESS
        89..=91 => 1, // CONCURRENT_MANAGED_ACCESS, PREEMPTION, HOST_POINTER_FOR_REGISTERED
        92..=94 => 0, // stream mem ops v1 (retired)
        95 => 1,      // COOPERATIVE_LAUNCH
        96 => 0,      // COOPERATIVE_MULTI_DEVICE_LAUNCH (retired)
        97 => 232448, // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        98 => 0,      // CAN_FLUSH_REMOTE_WRITES
        99 => 1,      // HOST_REGISTER_SUPPORTED
        100 | 101 => 0, // pageable via host page tables, direct managed access
        102 | 103 => 1, // VMM, POSIX fd handles
        104 | 105 => 0, // win32 handles
        106 => 32,    // MAX_BLOCKS_PER_MULTIPROCESSOR
        107 => 1,     // GENERIC_COMPRESSION_SUPPORTED
        108 => 30 << 20, // MAX_PERSISTING_L2_CACHE_SIZE
        109 => 134_213_632, // MAX_ACCESS_POLICY_WINDOW_SIZE
        110 => 1,     // GPU_DIRECT_RDMA_WITH_CUDA_VMM
        111 => 1024,  // RESERVED_SHARED_MEMORY_PER_BLOCK
        112..=117 => 1, // sparse arrays .. RDMA flush options
        118 => 100,   // GPU_DIRECT_RDMA_WRITES_ORDERING: owner
        119 => 1,     // MEMPOOL_SUPPORTED_HANDLE_TYPES: posix fd
        120..=125 => 1, // cluster launch .. IPC events
        126 => 4,     // MEM_SYNC_DOMAIN_COUNT
        127 => 1,     // TENSOR_MAP_ACCESS_SUPPORTED
        128 => 0,     // HANDLE_TYPE_FABRIC_SUPPORTED
        129 => 1,     // UNIFIED_FUNCTION_POINTERS
        130 => 0,     // NUMA_CONFIG: none
        131 => -1,    // NUMA_ID
        132 | 133 => 0, // MULTICAST, MPS_ENABLED
        134 => 0,     // HOST_NUMA_ID
        135..=138 => 0, // CIG, decompression
        139 => 0x2330_10de_u32 as i32, // GPU_PCI_DEVICE_ID
        140 => 0x16c1_10de_u32 as i32, // GPU_PCI_SUBSYSTEM_ID
        141..=148 => 0, // host NUMA / host pools / atomics
        149 => 1,     // LOCALITY_DOMAIN_COUNT
        150..=156 => 0, // oversized shmem, CIG, dma-buf mmap, logical endpoints
        157 => 132,   // LOCALITY_DOMAIN_MULTIPROCESSOR_COUNT
        158..=161 => 0,
        _ => return None,
    })
}

fn check(d: CUdevice) -> Res<(&'static Process, &'static Device)> {
    let p = process::initialized()?;
    Ok((p, p.device(d)?))
}

export! {
    fn cuDeviceGetCount(count: *mut i32) {
        let p = process::initialized()?;
        // SAFETY: caller's output pointer.
        unsafe { out(count, p.devices()?.len() as i32) }
    }
}

export! {
    fn cuDeviceGet(device: *mut CUdevice, ordinal: i32) {
        let p = process::initialized()?;
        p.device(ordinal)?;
        // SAFETY: caller's output pointer.
        unsafe { out(device, ordinal) }
    }
}

export! {
    fn cuDeviceGetName(name: *mut c_char, len: i32, dev: CUdevice) {
        check(dev)?;
        // SAFETY: the caller's buffer holds len bytes.
        unsafe { write_cstr(name, len, NAME) }
    }
}

export! {
    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) {
        let (_, d) = check(dev)?;
        // SAFETY: caller's output pointer.
        unsafe { out(bytes, d.sim.total_mem() as usize) }
    }
}

export! {
    fn cuDeviceGetAttribute(value: *mut i32, attrib: i32, dev: CUdevice) {
        check(dev)?;
        let v = attribute(attrib, dev).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(value, v) }
    }
}

fn get_uuid(uuid: *mut CUuuid, dev: CUdevice) -> Res {
    let (_, d) = check(dev)?;
    // SAFETY: caller's output pointer.
    unsafe { out(uuid, CUuuid { bytes: d.uuid() }) }
}

export! {
    fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) { get_uuid(uuid, dev) }
}

export! {
    fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) { get_uuid(uuid, dev) }
}

export! {
    fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: i32, dev: CUdevice) {
        check(dev)?;
        let s = format!("{:08X}:{:02X}:00.0", 0, pci_bus(dev));
        // SAFETY: the caller's buffer holds len bytes.
        unsafe { write_cstr(bus_id, len, &s) }
    }
}

/// Parses `[domain:]bus:device.function` (hex).
fn parse_bus_id(s: &str) -> Option<(u32, u32, u32)> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let (dom, bus, rest) = match parts.as_slice() {
        [d, b, r] => (u32::from_str_radix(d, 16).ok()?, *b, *r),
        [b, r] => (0, *b, *r),
        _ => return None,
    };
    let (dev, _func) = rest.split_once('.').unwrap_or((rest, "0"));
    Some((
        dom,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(dev, 16).ok()?,
    ))
}

export! {
    fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, bus_id: *const c_char) {
        let p = process::initialized()?;
        // SAFETY: NUL-terminated string from the caller.
        let s = unsafe { cstr(bus_id)? };
        let (dom, bus, d) = parse_bus_id(s).ok_or(INVALID_VALUE)?;
        let found = p.devices()?.iter().find(|x| dom == 0 && d == 0 && bus == pci_bus(x.ordinal) as u32).ok_or(CUresult::ERROR_INVALID_DEVICE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(dev, found.ordinal) }
    }
}

export! {
    fn cuDeviceCanAccessPeer(can: *mut i32, dev: CUdevice, peer: CUdevice) {
        check(dev)?;
        check(peer)?;
        // SAFETY: caller's output pointer.
        unsafe { out(can, i32::from(dev != peer)) }
    }
}

export! {
    fn cuDeviceGetP2PAttribute(value: *mut i32, attrib: i32, src: CUdevice, dst: CUdevice) {
        check(src)?;
        check(dst)?;
        if src == dst {
            return Err(CUresult::ERROR_INVALID_DEVICE);
        }
        let v = match attrib {
            1 => 0,         // PERFORMANCE_RANK
            2..=4 => 1,     // ACCESS_SUPPORTED, NATIVE_ATOMIC_SUPPORTED, CUDA_ARRAY_ACCESS_SUPPORTED
            _ => return Err(INVALID_VALUE),
        };
        // SAFETY: caller's output pointer.
        unsafe { out(value, v) }
    }
}

export! {
    fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) {
        let (p, d) = check(dev)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pool, handle_of(&d.default_pool(p))) }
    }
}

export! {
    fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) {
        let (p, d) = check(dev)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pool, handle_of(&d.current_pool(p))) }
    }
}

/// The device a CUDA 13 pool query names: only device locations and pinned
/// allocations exist here (no host memory pools).
fn pool_location(location: *const cuda_abi::CUmemLocation, alloc_type: u32) -> Res<CUdevice> {
    // SAFETY: the caller's location struct (NULL is rejected by `read`).
    let loc = unsafe { crate::entry::read(location)? };
    if alloc_type != 1 {
        return Err(INVALID_VALUE);
    }
    if loc.type_ != cuda_abi::CU_MEM_LOCATION_TYPE_DEVICE {
        return Err(CUresult::ERROR_NOT_SUPPORTED);
    }
    Ok(loc.id)
}

export! {
    /// CUDA 13: the default pool of a location (devices only here).
    fn cuMemGetDefaultMemPool(pool: *mut CUmemoryPool, location: *mut cuda_abi::CUmemLocation, alloc_type: u32) {
        let (p, d) = check(pool_location(location, alloc_type)?)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pool, handle_of(&d.default_pool(p))) }
    }
}

export! {
    /// CUDA 13: the current pool of a location (devices only here).
    fn cuMemGetMemPool(pool: *mut CUmemoryPool, location: *mut cuda_abi::CUmemLocation, alloc_type: u32) {
        let (p, d) = check(pool_location(location, alloc_type)?)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pool, handle_of(&d.current_pool(p))) }
    }
}

export! {
    fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) {
        let (p, d) = check(dev)?;
        let pl = p.pools.get(pool)?;
        if pl.device != dev {
            return Err(INVALID_VALUE);
        }
        *d.current_pool.lock().unwrap_or_else(|e| e.into_inner()) = Some(pl);
        Ok(())
    }
}

// ---------------------------------------------------------------- primary contexts

/// The device's primary context, created if needed, without retaining it
/// (what the runtime's private interface asks for).
pub fn primary_ctx(p: &Process, d: &Device) -> Arc<Ctx> {
    let mut pr = d.primary.lock().unwrap_or_else(|e| e.into_inner());
    if pr.ctx.is_none() {
        pr.ctx = Some(context::create(p, d.ordinal, pr.flags, true));
    }
    pr.ctx.clone().expect("just set")
}

fn retain(pctx: *mut CUcontext, dev: CUdevice) -> Res {
    let (p, d) = check(dev)?;
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    let ctx = primary_ctx(p, d);
    d.primary.lock().unwrap_or_else(|e| e.into_inner()).refs += 1;
    // SAFETY: caller's output pointer (checked non-NULL above).
    unsafe { out(pctx, handle_of(&ctx)) }
}

fn release(dev: CUdevice) -> Res {
    let (p, d) = check(dev)?;
    let dead = {
        let mut pr = d.primary.lock().unwrap_or_else(|e| e.into_inner());
        if pr.refs == 0 {
            return Err(CUresult::ERROR_INVALID_CONTEXT);
        }
        pr.refs -= 1;
        if pr.refs == 0 {
            pr.ctx.take()
        } else {
            None
        }
    };
    if let Some(c) = dead {
        context::destroy(p, &c);
    }
    Ok(())
}

fn set_flags(dev: CUdevice, flags: u32) -> Res {
    let (_, d) = check(dev)?;
    if flags & !0xff != 0 {
        return Err(INVALID_VALUE);
    }
    let mut pr = d.primary.lock().unwrap_or_else(|e| e.into_inner());
    pr.flags = flags;
    if let Some(c) = &pr.ctx {
        c.set_flags(flags);
    }
    Ok(())
}

fn reset(dev: CUdevice) -> Res {
    let (p, d) = check(dev)?;
    let dead = {
        let mut pr = d.primary.lock().unwrap_or_else(|e| e.into_inner());
        pr.refs = 0;
        pr.flags = 0;
        pr.ctx.take()
    };
    if let Some(c) = dead {
        context::destroy(p, &c);
    }
    Ok(())
}

export! {
    fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) { retain(pctx, dev) }
}
export! {
    fn cuDevicePrimaryCtxRelease(dev: CUdevice) { release(dev) }
}
export! {
    fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) { release(dev) }
}
export! {
    fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: u32) { set_flags(dev, flags) }
}
export! {
    fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: u32) { set_flags(dev, flags) }
}
export! {
    fn cuDevicePrimaryCtxReset(dev: CUdevice) { reset(dev) }
}
export! {
    fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) { reset(dev) }
}
export! {
    fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut u32, active: *mut i32) {
        let (_, d) = check(dev)?;
        if flags.is_null() || active.is_null() {
            return Err(INVALID_VALUE);
        }
        let pr = d.primary.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: caller's output pointers (checked non-NULL).
        unsafe {
            out(flags, pr.flags)?;
            out(active, i32::from(pr.ctx.is_some() && pr.refs > 0))
        }
    }
}
