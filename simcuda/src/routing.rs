//! `cuGetProcAddress`: one routing table maps (name, requested version,
//! flags) to the very functions this library exports, so a pointer obtained
//! by lookup is identical to `dlsym` of the versioned export.
//!
//! The rows are `cuda_abi::abi::ABIS` (one table of ABI versions for the
//! shim and this driver). Each row is one ABI of a name: the driver version that introduced it
//! (from `cudaTypedefs.h`: `PFN_cuMemAlloc_v3020` means `cuMemAlloc` at 3020
//! is `cuMemAlloc_v2`), the export, and its per-thread-default-stream
//! variant where one exists. Rows without an export are ABIs this driver
//! does not implement: asking for them finds nothing rather than a function
//! of the wrong signature.

use crate::entry::{cstr, out, out_opt, Res, INVALID_VALUE};
use crate::{
    array, capture, config, context, copy, dark, device, event, graph, init, ipc, launch, link,
    memop, memory, module, pool, stream, tensormap, texture, vmm,
};
use cuda_abi::{
    CUdriverProcAddressQueryResult, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
    CU_GET_PROC_ADDRESS_SUCCESS, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
    CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
};
use std::collections::HashMap;
use std::ffi::{c_char, c_void};

#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub name: &'static str,
    pub version: i32,
    pub f: Option<usize>,
    pub per_thread: Option<usize>,
}

/// Every function this driver exports as an entry point, by name.
macro_rules! exports {
    ($($module:ident :: $f:ident),* $(,)?) => {
        vec![$((stringify!($f), $module::$f as *const () as usize)),*]
    };
}

/// The functions behind the exports named in `cuda_abi::abi::ABIS`.
fn exports() -> Vec<(&'static str, usize)> {
    exports![
        // init, errors, lookup
        init::cuInit,
        init::cuDriverGetVersion,
        init::cuGetErrorString,
        init::cuGetErrorName,
        self::cuGetProcAddress,
        self::cuGetProcAddress_v2,
        dark::cuGetExportTable,
        // devices
        device::cuDeviceGet,
        device::cuDeviceGetCount,
        device::cuDeviceGetName,
        device::cuDeviceTotalMem_v2,
        device::cuDeviceGetAttribute,
        device::cuDeviceGetUuid,
        device::cuDeviceGetUuid_v2,
        device::cuDeviceGetPCIBusId,
        device::cuDeviceGetByPCIBusId,
        device::cuDeviceCanAccessPeer,
        context::cuCtxEnablePeerAccess,
        context::cuCtxDisablePeerAccess,
        context::cuProfilerStart,
        context::cuProfilerStop,
        stream::cuStreamGetAttribute,
        stream::cuStreamGetAttribute_ptsz,
        stream::cuStreamSetAttribute,
        stream::cuStreamSetAttribute_ptsz,
        device::cuDeviceGetP2PAttribute,
        device::cuDeviceGetDefaultMemPool,
        device::cuDeviceGetMemPool,
        device::cuMemGetDefaultMemPool,
        device::cuMemGetMemPool,
        device::cuDeviceSetMemPool,
        device::cuDevicePrimaryCtxRetain,
        device::cuDevicePrimaryCtxRelease,
        device::cuDevicePrimaryCtxRelease_v2,
        device::cuDevicePrimaryCtxSetFlags,
        device::cuDevicePrimaryCtxSetFlags_v2,
        device::cuDevicePrimaryCtxReset,
        device::cuDevicePrimaryCtxReset_v2,
        device::cuDevicePrimaryCtxGetState,
        // contexts
        context::cuCtxCreate_v2,
        context::cuCtxCreate_v3,
        context::cuCtxCreate_v4,
        context::cuCtxDestroy_v2,
        context::cuCtxSetCurrent,
        context::cuCtxGetCurrent,
        context::cuCtxPushCurrent_v2,
        context::cuCtxPushCurrent,
        context::cuCtxPopCurrent,
        context::cuCtxPopCurrent_v2,
        context::cuCtxGetDevice,
        context::cuCtxGetDevice_v2,
        context::cuCtxGetFlags,
        context::cuCtxSetFlags,
        context::cuCtxGetLimit,
        context::cuCtxSetLimit,
        context::cuCtxGetCacheConfig,
        context::cuCtxSetCacheConfig,
        context::cuCtxGetStreamPriorityRange,
        context::cuCtxSynchronize,
        context::cuCtxSynchronize_v2,
        context::cuCtxGetApiVersion,
        context::cuCtxGetId,
        // memory
        memory::cuMemGetInfo_v2,
        memory::cuMemAlloc,
        memory::cuMemAlloc_v2,
        memory::cuMemFree,
        memory::cuMemFree_v2,
        memory::cuMemAllocPitch_v2,
        memory::cuMemAllocManaged,
        memory::cuMemGetAddressRange_v2,
        memory::cuMemAllocHost_v2,
        memory::cuMemHostAlloc,
        memory::cuMemFreeHost,
        memory::cuMemHostRegister_v2,
        memory::cuMemHostUnregister,
        memory::cuMemHostGetDevicePointer_v2,
        memory::cuMemHostGetFlags,
        memory::cuPointerGetAttribute,
        memory::cuPointerGetAttributes,
        // stream-ordered allocation and pools
        pool::cuMemAllocAsync,
        pool::cuMemAllocAsync_ptsz,
        pool::cuMemAllocFromPoolAsync,
        pool::cuMemAllocFromPoolAsync_ptsz,
        pool::cuMemFreeAsync,
        pool::cuMemFreeAsync_ptsz,
        pool::cuMemPoolCreate,
        pool::cuMemPoolDestroy,
        pool::cuMemPoolTrimTo,
        pool::cuMemPoolSetAttribute,
        pool::cuMemPoolGetAttribute,
        pool::cuMemPoolSetAccess,
        pool::cuMemPoolGetAccess,
        // arrays
        array::cuArrayCreate_v2,
        array::cuArray3DCreate_v2,
        array::cuArrayGetDescriptor_v2,
        array::cuArray3DGetDescriptor_v2,
        array::cuArrayDestroy,
        array::cuMipmappedArrayCreate,
        array::cuMipmappedArrayDestroy,
        // virtual memory management
        vmm::cuMemGetAllocationGranularity,
        vmm::cuMemCreate,
        vmm::cuMemRelease,
        vmm::cuMemAddressReserve,
        vmm::cuMemAddressFree,
        vmm::cuMemMap,
        vmm::cuMemUnmap,
        vmm::cuMemSetAccess,
        vmm::cuMemGetAccess,
        vmm::cuMemGetAllocationPropertiesFromHandle,
        vmm::cuMemRetainAllocationHandle,
        // copies and memsets
        copy::cuMemcpy,
        copy::cuMemcpy_ptds,
        copy::cuMemcpyAsync,
        copy::cuMemcpyAsync_ptsz,
        copy::cuMemcpyPeer,
        copy::cuMemcpyPeer_ptds,
        copy::cuMemcpyPeerAsync,
        copy::cuMemcpyPeerAsync_ptsz,
        copy::cuMemcpyHtoD_v2,
        copy::cuMemcpyHtoD_v2_ptds,
        copy::cuMemcpyDtoH_v2,
        copy::cuMemcpyDtoH_v2_ptds,
        copy::cuMemcpyDtoD_v2,
        copy::cuMemcpyDtoD_v2_ptds,
        copy::cuMemcpyHtoDAsync_v2,
        copy::cuMemcpyHtoDAsync_v2_ptsz,
        copy::cuMemcpyDtoHAsync_v2,
        copy::cuMemcpyDtoHAsync_v2_ptsz,
        copy::cuMemcpyDtoDAsync_v2,
        copy::cuMemcpyDtoDAsync_v2_ptsz,
        copy::cuMemcpy2D_v2,
        copy::cuMemcpy2D_v2_ptds,
        copy::cuMemcpy2DUnaligned_v2,
        copy::cuMemcpy2DUnaligned_v2_ptds,
        copy::cuMemcpy2DAsync_v2,
        copy::cuMemcpy2DAsync_v2_ptsz,
        copy::cuMemcpy3D_v2,
        copy::cuMemcpy3D_v2_ptds,
        copy::cuMemcpy3DAsync_v2,
        copy::cuMemcpy3DAsync_v2_ptsz,
        copy::cuMemsetD8_v2,
        copy::cuMemsetD8_v2_ptds,
        copy::cuMemsetD16_v2,
        copy::cuMemsetD16_v2_ptds,
        copy::cuMemsetD32_v2,
        copy::cuMemsetD32_v2_ptds,
        copy::cuMemsetD8Async,
        copy::cuMemsetD8Async_ptsz,
        copy::cuMemsetD16Async,
        copy::cuMemsetD16Async_ptsz,
        copy::cuMemsetD32Async,
        copy::cuMemsetD32Async_ptsz,
        copy::cuMemsetD2D8_v2,
        copy::cuMemsetD2D8_v2_ptds,
        copy::cuMemsetD2D16_v2,
        copy::cuMemsetD2D16_v2_ptds,
        copy::cuMemsetD2D32_v2,
        copy::cuMemsetD2D32_v2_ptds,
        copy::cuMemsetD2D8Async,
        copy::cuMemsetD2D8Async_ptsz,
        copy::cuMemsetD2D16Async,
        copy::cuMemsetD2D16Async_ptsz,
        copy::cuMemsetD2D32Async,
        copy::cuMemsetD2D32Async_ptsz,
        // streams
        stream::cuStreamCreate,
        stream::cuStreamCreateWithPriority,
        stream::cuStreamDestroy_v2,
        stream::cuStreamQuery,
        stream::cuStreamQuery_ptsz,
        stream::cuStreamSynchronize,
        stream::cuStreamSynchronize_ptsz,
        stream::cuStreamWaitEvent,
        stream::cuStreamWaitEvent_ptsz,
        stream::cuStreamGetPriority,
        stream::cuStreamGetPriority_ptsz,
        stream::cuStreamGetFlags,
        stream::cuStreamGetFlags_ptsz,
        stream::cuStreamGetCtx,
        stream::cuStreamGetCtx_ptsz,
        stream::cuStreamGetCtx_v2,
        stream::cuStreamGetCtx_v2_ptsz,
        stream::cuStreamGetId,
        stream::cuStreamGetId_ptsz,
        stream::cuStreamGetDevice,
        stream::cuStreamGetDevice_ptsz,
        stream::cuLaunchHostFunc,
        stream::cuLaunchHostFunc_ptsz,
        stream::cuLaunchHostFunc_v2,
        stream::cuLaunchHostFunc_v2_ptsz,
        stream::cuStreamAddCallback,
        stream::cuStreamAddCallback_ptsz,
        // stream capture
        capture::cuStreamBeginCapture,
        capture::cuStreamBeginCapture_ptsz,
        capture::cuStreamBeginCapture_v2,
        capture::cuStreamBeginCapture_v2_ptsz,
        capture::cuStreamEndCapture,
        capture::cuStreamEndCapture_ptsz,
        capture::cuStreamIsCapturing,
        capture::cuStreamIsCapturing_ptsz,
        capture::cuStreamGetCaptureInfo,
        capture::cuStreamGetCaptureInfo_ptsz,
        capture::cuStreamGetCaptureInfo_v2,
        capture::cuStreamGetCaptureInfo_v2_ptsz,
        capture::cuStreamGetCaptureInfo_v3,
        capture::cuStreamGetCaptureInfo_v3_ptsz,
        capture::cuThreadExchangeStreamCaptureMode,
        // events
        event::cuEventCreate,
        event::cuEventRecord,
        event::cuEventRecord_ptsz,
        event::cuEventRecordWithFlags,
        event::cuEventRecordWithFlags_ptsz,
        event::cuEventQuery,
        event::cuEventSynchronize,
        event::cuEventElapsedTime,
        event::cuEventElapsedTime_v2,
        event::cuEventDestroy_v2,
        // modules, libraries, kernels
        module::cuModuleLoadData,
        module::cuModuleLoadDataEx,
        module::cuModuleLoadFatBinary,
        module::cuModuleUnload,
        module::cuModuleGetFunction,
        module::cuModuleGetGlobal_v2,
        module::cuModuleGetLoadingMode,
        module::cuLibraryLoadData,
        module::cuLibraryUnload,
        module::cuLibraryGetKernel,
        module::cuLibraryGetModule,
        module::cuLibraryGetGlobal,
        module::cuKernelGetFunction,
        module::cuKernelGetLibrary,
        module::cuKernelGetName,
        module::cuKernelGetAttribute,
        module::cuKernelSetAttribute,
        module::cuKernelSetCacheConfig,
        module::cuFuncGetModule,
        module::cuFuncGetName,
        module::cuFuncGetAttribute,
        module::cuFuncSetAttribute,
        module::cuFuncSetCacheConfig,
        module::cuOccupancyMaxActiveBlocksPerMultiprocessor,
        module::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags,
        module::cuOccupancyAvailableDynamicSMemPerBlock,
        module::cuOccupancyMaxPotentialClusterSize,
        module::cuOccupancyMaxPotentialBlockSize,
        module::cuModuleLoad,
        texture::cuTexObjectCreate,
        texture::cuTexObjectDestroy,
        texture::cuTexObjectGetResourceDesc,
        texture::cuTexObjectGetTextureDesc,
        texture::cuTexObjectGetResourceViewDesc,
        module::cuOccupancyMaxActiveClusters,
        // launches
        launch::cuLaunchKernel,
        launch::cuLaunchKernel_ptsz,
        launch::cuLaunchKernelEx,
        launch::cuLaunchKernelEx_ptsz,
        launch::cuLaunchCooperativeKernel,
        launch::cuLaunchCooperativeKernel_ptsz,
        // graphs
        graph::cuGraphCreate,
        graph::cuGraphDestroy,
        graph::cuGraphAddKernelNode,
        graph::cuGraphAddKernelNode_v2,
        graph::cuGraphAddMemcpyNode,
        graph::cuGraphAddMemsetNode,
        graph::cuGraphAddEmptyNode,
        graph::cuGraphGetNodes,
        graph::cuGraphGetRootNodes,
        graph::cuGraphNodeGetType,
        graph::cuGraphKernelNodeGetParams_v2,
        graph::cuGraphKernelNodeGetParams,
        graph::cuGraphKernelNodeSetParams,
        graph::cuGraphKernelNodeSetParams_v2,
        graph::cuGraphExecKernelNodeSetParams,
        graph::cuGraphExecKernelNodeSetParams_v2,
        graph::cuGraphExecUpdate,
        graph::cuGraphExecUpdate_v2,
        graph::cuGraphNodeGetDependencies,
        graph::cuGraphNodeGetDependencies_v2,
        graph::cuGraphNodeGetDependentNodes,
        graph::cuGraphNodeGetDependentNodes_v2,
        graph::cuUserObjectCreate,
        graph::cuUserObjectRetain,
        graph::cuUserObjectRelease,
        graph::cuGraphRetainUserObject,
        graph::cuGraphReleaseUserObject,
        capture::cuStreamBeginCaptureToGraph,
        capture::cuStreamBeginCaptureToGraph_ptsz,
        capture::cuStreamUpdateCaptureDependencies,
        capture::cuStreamUpdateCaptureDependencies_ptsz,
        capture::cuStreamUpdateCaptureDependencies_v2,
        capture::cuStreamUpdateCaptureDependencies_v2_ptsz,
        graph::cuGraphAddHostNode,
        graph::cuGraphHostNodeGetParams,
        graph::cuGraphHostNodeSetParams,
        graph::cuGraphExecHostNodeSetParams,
        graph::cuGraphAddMemAllocNode,
        graph::cuGraphMemAllocNodeGetParams,
        graph::cuGraphAddMemFreeNode,
        graph::cuGraphMemFreeNodeGetParams,
        graph::cuGraphAddNode,
        graph::cuGraphAddNode_v2,
        graph::cuDeviceGraphMemTrim,
        graph::cuDeviceGetGraphMemAttribute,
        graph::cuDeviceSetGraphMemAttribute,
        graph::cuGraphInstantiate,
        graph::cuGraphInstantiate_v2,
        link::cuLinkCreate,
        link::cuLinkCreate_v2,
        link::cuLinkAddData,
        link::cuLinkAddData_v2,
        link::cuLinkAddFile,
        link::cuLinkAddFile_v2,
        link::cuLinkComplete,
        link::cuLinkDestroy,
        tensormap::cuTensorMapEncodeTiled,
        tensormap::cuTensorMapEncodeIm2col,
        tensormap::cuTensorMapReplaceAddress,
        memop::cuStreamWriteValue32,
        memop::cuStreamWriteValue32_ptsz,
        memop::cuStreamWriteValue32_v2,
        memop::cuStreamWriteValue32_v2_ptsz,
        memop::cuStreamWriteValue64,
        memop::cuStreamWriteValue64_ptsz,
        memop::cuStreamWriteValue64_v2,
        memop::cuStreamWriteValue64_v2_ptsz,
        memop::cuStreamWaitValue32,
        memop::cuStreamWaitValue32_ptsz,
        memop::cuStreamWaitValue32_v2,
        memop::cuStreamWaitValue32_v2_ptsz,
        memop::cuStreamWaitValue64,
        memop::cuStreamWaitValue64_ptsz,
        memop::cuStreamWaitValue64_v2,
        memop::cuStreamWaitValue64_v2_ptsz,
        memop::cuStreamBatchMemOp,
        memop::cuStreamBatchMemOp_ptsz,
        memop::cuStreamBatchMemOp_v2,
        memop::cuStreamBatchMemOp_v2_ptsz,
        memop::cuMemPrefetchAsync,
        memop::cuMemPrefetchAsync_ptsz,
        memop::cuMemPrefetchAsync_v2,
        memop::cuMemPrefetchAsync_v2_ptsz,
        memop::cuMemAdvise,
        memop::cuMemAdvise_v2,
        ipc::cuIpcGetMemHandle,
        ipc::cuIpcOpenMemHandle,
        ipc::cuIpcOpenMemHandle_v2,
        ipc::cuIpcCloseMemHandle,
        ipc::cuIpcGetEventHandle,
        ipc::cuIpcOpenEventHandle,
        vmm::cuMemExportToShareableHandle,
        pool::cuMemPoolExportToShareableHandle,
        pool::cuMemPoolImportFromShareableHandle,
        pool::cuMemPoolExportPointer,
        pool::cuMemPoolImportPointer,
        vmm::cuMemImportFromShareableHandle,
        graph::cuGraphInstantiateWithFlags,
        graph::cuGraphInstantiateWithParams,
        graph::cuGraphInstantiateWithParams_ptsz,
        graph::cuGraphUpload,
        graph::cuGraphUpload_ptsz,
        graph::cuGraphLaunch,
        graph::cuGraphLaunch_ptsz,
        graph::cuGraphExecDestroy,
    ]
}

/// Every routed ABI: the rows of `cuda_abi::abi::ABIS` (the one table of
/// ABI versions, shared with the shim and checked against cudaTypedefs.h),
/// with this driver's functions for the exports it implements. An ABI whose
/// export it lacks is routed to nothing.
pub fn rows() -> Vec<Route> {
    let fns: HashMap<&str, usize> = exports().into_iter().collect();
    let export = |name: &str| fns.get(name).copied();
    cuda_abi::abi::ABIS
        .iter()
        .map(|a| Route {
            name: a.base,
            version: a.since,
            f: a.export.and_then(export),
            per_thread: a.per_thread.and_then(export),
        })
        .collect()
}

/// Rows by name, oldest ABI first. Built without ever waiting on another
/// thread (`forksafe`): a child forked while a thread built it must not find
/// it frozen "in progress".
fn table() -> &'static HashMap<&'static str, Vec<Route>> {
    static TABLE: simgpu::forksafe::RaceCell<HashMap<&'static str, Vec<Route>>> =
        simgpu::forksafe::RaceCell::new();
    TABLE.get_or_init(|| {
        let mut m: HashMap<&'static str, Vec<Route>> = HashMap::new();
        for r in rows() {
            m.entry(r.name).or_default().push(r);
        }
        for v in m.values_mut() {
            v.sort_by_key(|r| r.version);
        }
        m
    })
}

/// Resolves a lookup: the pointer (or NULL) and the query status.
pub fn resolve(
    name: &str,
    version: i32,
    flags: u64,
) -> (Option<usize>, CUdriverProcAddressQueryResult) {
    let Some(rows) = table().get(name) else {
        return (None, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    };
    let Some(r) = rows.iter().rev().find(|r| r.version <= version) else {
        return (None, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    };
    let f = if flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM != 0 {
        r.per_thread.or(r.f)
    } else {
        r.f
    };
    match f {
        Some(f) => (Some(f), CU_GET_PROC_ADDRESS_SUCCESS),
        None => (None, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND),
    }
}

fn lookup(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: u64,
    status: *mut CUdriverProcAddressQueryResult,
) -> Res {
    if pfn.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: NUL-terminated symbol name from the caller.
    let name = unsafe { cstr(symbol)? };
    if version > config::driver_version() || flags > 2 {
        return Err(INVALID_VALUE);
    }
    let (f, st) = resolve(name, version, flags);
    if f.is_none() && config::log_enabled() {
        let why = if st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT {
            "version not sufficient"
        } else {
            "not implemented"
        };
        config::log(format_args!(
            "cuGetProcAddress({name}, {version}, flags {flags}): {why}"
        ));
    }
    // SAFETY: the caller's output pointers (pfn checked non-NULL, status optional).
    unsafe {
        out(pfn, f.map_or(std::ptr::null_mut(), |a| a as *mut c_void))?;
        out_opt(status, st);
    }
    Ok(())
}

export! {
    /// The CUDA 11.3 form (no query status).
    fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: i32, flags: u64) {
        lookup(symbol, pfn, version, flags, std::ptr::null_mut())
    }
}

export! {
    /// The CUDA 12.0 form. Unknown names and unimplemented ABIs give
    /// `CUDA_SUCCESS` with a NULL pointer and status SYMBOL_NOT_FOUND; a name
    /// whose first ABI is newer than the requested version gives status
    /// VERSION_NOT_SUFFICIENT; a version above the driver's is invalid.
    fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: i32, flags: u64, status: *mut CUdriverProcAddressQueryResult) {
        lookup(symbol, pfn, version, flags, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn f(name: &str, version: i32, flags: u64) -> (Option<usize>, u32) {
        resolve(name, version, flags)
    }

    #[test]
    fn newest_abi_at_or_below_the_request() {
        assert_eq!(
            f("cuMemAlloc", 2000, 0).0,
            Some(memory::cuMemAlloc as *const () as usize)
        );
        assert_eq!(
            f("cuMemAlloc", 3020, 0).0,
            Some(memory::cuMemAlloc_v2 as *const () as usize)
        );
        assert_eq!(
            f("cuMemAlloc", 13050, 0).0,
            Some(memory::cuMemAlloc_v2 as *const () as usize)
        );
        assert_eq!(
            f("cuGetProcAddress", 11030, 0).0,
            Some(cuGetProcAddress as *const () as usize)
        );
        assert_eq!(
            f("cuGetProcAddress", 12000, 0).0,
            Some(cuGetProcAddress_v2 as *const () as usize)
        );
    }

    #[test]
    fn per_thread_variants_only_with_flag_2() {
        let legacy = launch::cuLaunchKernel as *const () as usize;
        let pt = launch::cuLaunchKernel_ptsz as *const () as usize;
        assert_eq!(f("cuLaunchKernel", 12000, 0).0, Some(legacy));
        assert_eq!(f("cuLaunchKernel", 12000, 1).0, Some(legacy));
        assert_eq!(f("cuLaunchKernel", 12000, 2).0, Some(pt));
        assert_eq!(
            f("cuMemAlloc", 12000, 2).0,
            Some(memory::cuMemAlloc_v2 as *const () as usize)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(
            f("cuNoSuchThing", 12000, 0),
            (None, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)
        );
        assert_eq!(
            f("cuMemAllocAsync", 11000, 0),
            (None, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT)
        );
        // a known ABI this driver does not implement finds nothing
        assert_eq!(
            f("cuMemcpyHtoD", 2000, 0),
            (None, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)
        );
    }

    /// Every function this driver exports as an entry point is reachable
    /// through `cuGetProcAddress`: its name is in the shared ABI table.
    #[test]
    fn every_export_is_routed() {
        let routed: BTreeSet<usize> = rows()
            .iter()
            .flat_map(|r| [r.f, r.per_thread])
            .flatten()
            .collect();
        for (name, f) in exports() {
            assert!(
                routed.contains(&f),
                "{name} is exported but in no row of cuda_abi::abi::ABIS"
            );
        }
    }
}
