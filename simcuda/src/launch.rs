//! Kernel launches: asynchronous `Kernel` work in the launching stream's
//! context, or a kernel node while the stream is capturing. Durations follow
//! the `sim_spin` convention (crate docs).

use crate::config;
use crate::entry::{read, slice, Res, INVALID_VALUE};
use crate::module::{self, Function};
use crate::stream::{self, DefaultStream};
use cuda_abi::driver_types::{CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_END};
use cuda_abi::{CUfunction, CUlaunchConfig, CUstream};
use std::ffi::c_void;
use std::sync::Arc;

/// The simulated duration of one launch of `f`.
///
/// # Safety
/// `params`/`extra` are the launch's argument arrays as CUDA defines them.
pub unsafe fn duration(
    f: &Function,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Res<u64> {
    if !f.spin {
        return Ok(config::default_kernel_ns());
    }
    if !params.is_null() {
        // SAFETY: kernelParams[0] points to the first argument, an unsigned long long by convention.
        return unsafe { read(read(params)?.cast::<u64>()) };
    }
    if !extra.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: `extra` is a CU_LAUNCH_PARAM_END-terminated list of (key, value) pairs.
            let key = unsafe { read(extra.add(i))? } as usize;
            if key == CU_LAUNCH_PARAM_END {
                break;
            }
            // SAFETY: as above; every key but END is followed by its value.
            let val = unsafe { read(extra.add(i + 1))? };
            if key == CU_LAUNCH_PARAM_BUFFER_POINTER {
                // SAFETY: the argument buffer starts with the first argument.
                return unsafe { read(val.cast::<u64>()) };
            }
            i += 2;
        }
    }
    Err(INVALID_VALUE)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    func: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shmem: u32,
    h: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    ds: DefaultStream,
) -> Res {
    let f: Arc<Function> = module::resolve(func)?;
    let s = stream::resolve(h, ds)?;
    if grid.contains(&0) || block.contains(&0) || grid[1] > 65535 || grid[2] > 65535 {
        return Err(INVALID_VALUE);
    }
    let threads = u64::from(block[0]) * u64::from(block[1]) * u64::from(block[2]);
    if threads > f.attr(0)? as u64 || block[2] > 64 {
        return Err(INVALID_VALUE);
    }
    if i64::from(shmem) > i64::from(f.attr(8)?).max(49152) {
        return Err(cuda_abi::CUresult(701)); // CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    }
    // SAFETY: the caller's launch argument arrays.
    let ns = unsafe { duration(&f, params, extra)? };
    if s.capturing() {
        return crate::capture::add_kernel(&s, f, ns, grid, block, shmem);
    }
    s.submit(simgpu::Work {
        kind: simgpu::WorkKind::Kernel,
        duration_ns: ns,
        tag: f.tag,
    })?;
    Ok(())
}

export_pt! {
    fn cuLaunchKernel / cuLaunchKernel_ptsz(f: CUfunction, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shmem: u32, h: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) |ds| {
        launch(f, [gx, gy, gz], [bx, by, bz], shmem, h, params, extra, ds)
    }
}

export_pt! {
    fn cuLaunchKernelEx / cuLaunchKernelEx_ptsz(cfg: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) |ds| {
        // SAFETY: caller's launch configuration.
        let c = unsafe { read(cfg)? };
        // SAFETY: caller's attribute array of numAttrs entries.
        let attrs = unsafe { slice(c.attrs.cast_const(), c.numAttrs as usize)? };
        // Attributes (cooperative, clusters, priorities, ...) do not change the simulated duration.
        let _ = attrs;
        launch(f, [c.gridDimX, c.gridDimY, c.gridDimZ], [c.blockDimX, c.blockDimY, c.blockDimZ], c.sharedMemBytes, c.hStream, params, extra, ds)
    }
}

export_pt! {
    fn cuLaunchCooperativeKernel / cuLaunchCooperativeKernel_ptsz(f: CUfunction, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shmem: u32, h: CUstream, params: *mut *mut c_void) |ds| {
        launch(f, [gx, gy, gz], [bx, by, bz], shmem, h, params, std::ptr::null_mut(), ds)
    }
}
