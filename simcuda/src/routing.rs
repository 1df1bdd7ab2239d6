//! `cuGetProcAddress`: one routing table maps (name, requested version,
//! flags) to the very functions this library exports, so a pointer obtained
//! by lookup is identical to `dlsym` of the versioned export.
//!
//! Each row is one ABI of a name: the driver version that introduced it
//! (from `cudaTypedefs.h`: `PFN_cuMemAlloc_v3020` means `cuMemAlloc` at 3020
//! is `cuMemAlloc_v2`), the export, and its per-thread-default-stream
//! variant where one exists. Rows without an export are ABIs this driver
//! does not implement: asking for them finds nothing rather than a function
//! of the wrong signature.

use crate::entry::{cstr, out, out_opt, Res, INVALID_VALUE};
use crate::{
    array, capture, config, context, copy, dark, device, event, graph, init, launch, memory,
    module, pool, stream, vmm,
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

macro_rules! row {
    ($n:literal, $v:literal) => {
        Route {
            name: $n,
            version: $v,
            f: None,
            per_thread: None,
        }
    };
    ($n:literal, $v:literal, $f:path) => {
        Route {
            name: $n,
            version: $v,
            f: Some($f as *const () as usize),
            per_thread: None,
        }
    };
    ($n:literal, $v:literal, $f:path, $pt:path) => {
        Route {
            name: $n,
            version: $v,
            f: Some($f as *const () as usize),
            per_thread: Some($pt as *const () as usize),
        }
    };
}

/// Every routed ABI.
pub fn rows() -> Vec<Route> {
    vec![
        // init, errors, lookup
        row!("cuInit", 2000, init::cuInit),
        row!("cuDriverGetVersion", 2020, init::cuDriverGetVersion),
        row!("cuGetErrorString", 6000, init::cuGetErrorString),
        row!("cuGetErrorName", 6000, init::cuGetErrorName),
        row!("cuGetProcAddress", 11030, cuGetProcAddress),
        row!("cuGetProcAddress", 12000, cuGetProcAddress_v2),
        row!("cuGetExportTable", 3000, dark::cuGetExportTable),
        // devices
        row!("cuDeviceGet", 2000, device::cuDeviceGet),
        row!("cuDeviceGetCount", 2000, device::cuDeviceGetCount),
        row!("cuDeviceGetName", 2000, device::cuDeviceGetName),
        row!("cuDeviceTotalMem", 2000),
        row!("cuDeviceTotalMem", 3020, device::cuDeviceTotalMem_v2),
        row!("cuDeviceGetAttribute", 2000, device::cuDeviceGetAttribute),
        row!("cuDeviceGetUuid", 9020, device::cuDeviceGetUuid),
        row!("cuDeviceGetUuid", 11040, device::cuDeviceGetUuid_v2),
        row!("cuDeviceGetPCIBusId", 4010, device::cuDeviceGetPCIBusId),
        row!("cuDeviceGetByPCIBusId", 4010, device::cuDeviceGetByPCIBusId),
        row!("cuDeviceCanAccessPeer", 4000, device::cuDeviceCanAccessPeer),
        row!(
            "cuDeviceGetP2PAttribute",
            8000,
            device::cuDeviceGetP2PAttribute
        ),
        row!(
            "cuDeviceGetDefaultMemPool",
            11020,
            device::cuDeviceGetDefaultMemPool
        ),
        row!("cuDeviceGetMemPool", 11020, device::cuDeviceGetMemPool),
        row!("cuDeviceSetMemPool", 11020, device::cuDeviceSetMemPool),
        row!(
            "cuDevicePrimaryCtxRetain",
            7000,
            device::cuDevicePrimaryCtxRetain
        ),
        row!(
            "cuDevicePrimaryCtxRelease",
            7000,
            device::cuDevicePrimaryCtxRelease
        ),
        row!(
            "cuDevicePrimaryCtxRelease",
            11000,
            device::cuDevicePrimaryCtxRelease_v2
        ),
        row!(
            "cuDevicePrimaryCtxSetFlags",
            7000,
            device::cuDevicePrimaryCtxSetFlags
        ),
        row!(
            "cuDevicePrimaryCtxSetFlags",
            11000,
            device::cuDevicePrimaryCtxSetFlags_v2
        ),
        row!(
            "cuDevicePrimaryCtxReset",
            7000,
            device::cuDevicePrimaryCtxReset
        ),
        row!(
            "cuDevicePrimaryCtxReset",
            11000,
            device::cuDevicePrimaryCtxReset_v2
        ),
        row!(
            "cuDevicePrimaryCtxGetState",
            7000,
            device::cuDevicePrimaryCtxGetState
        ),
        // contexts
        row!("cuCtxCreate", 2000),
        row!("cuCtxCreate", 3020, context::cuCtxCreate_v2),
        row!("cuCtxCreate", 11040, context::cuCtxCreate_v3),
        row!("cuCtxCreate", 12050, context::cuCtxCreate_v4),
        row!("cuCtxDestroy", 2000),
        row!("cuCtxDestroy", 4000, context::cuCtxDestroy_v2),
        row!("cuCtxSetCurrent", 4000, context::cuCtxSetCurrent),
        row!("cuCtxGetCurrent", 4000, context::cuCtxGetCurrent),
        row!("cuCtxPushCurrent", 2000),
        row!("cuCtxPushCurrent", 4000, context::cuCtxPushCurrent_v2),
        row!("cuCtxPopCurrent", 2000),
        row!("cuCtxPopCurrent", 4000, context::cuCtxPopCurrent_v2),
        row!("cuCtxGetDevice", 2000, context::cuCtxGetDevice),
        row!("cuCtxGetDevice", 13000, context::cuCtxGetDevice_v2),
        row!("cuCtxGetFlags", 7000, context::cuCtxGetFlags),
        row!("cuCtxSetFlags", 12010, context::cuCtxSetFlags),
        row!("cuCtxGetLimit", 3010, context::cuCtxGetLimit),
        row!("cuCtxSetLimit", 3010, context::cuCtxSetLimit),
        row!("cuCtxGetCacheConfig", 3020, context::cuCtxGetCacheConfig),
        row!("cuCtxSetCacheConfig", 3020, context::cuCtxSetCacheConfig),
        row!(
            "cuCtxGetStreamPriorityRange",
            5050,
            context::cuCtxGetStreamPriorityRange
        ),
        row!("cuCtxSynchronize", 2000, context::cuCtxSynchronize),
        row!("cuCtxSynchronize", 13000, context::cuCtxSynchronize_v2),
        row!("cuCtxGetApiVersion", 3020, context::cuCtxGetApiVersion),
        row!("cuCtxGetId", 12000, context::cuCtxGetId),
        // memory
        row!("cuMemGetInfo", 2000),
        row!("cuMemGetInfo", 3020, memory::cuMemGetInfo_v2),
        row!("cuMemAlloc", 2000, memory::cuMemAlloc),
        row!("cuMemAlloc", 3020, memory::cuMemAlloc_v2),
        row!("cuMemFree", 2000, memory::cuMemFree),
        row!("cuMemFree", 3020, memory::cuMemFree_v2),
        row!("cuMemAllocPitch", 2000),
        row!("cuMemAllocPitch", 3020, memory::cuMemAllocPitch_v2),
        row!("cuMemAllocManaged", 6000, memory::cuMemAllocManaged),
        row!("cuMemGetAddressRange", 2000),
        row!(
            "cuMemGetAddressRange",
            3020,
            memory::cuMemGetAddressRange_v2
        ),
        row!("cuMemAllocHost", 2000),
        row!("cuMemAllocHost", 3020, memory::cuMemAllocHost_v2),
        row!("cuMemHostAlloc", 2020, memory::cuMemHostAlloc),
        row!("cuMemFreeHost", 2000, memory::cuMemFreeHost),
        row!("cuMemHostRegister", 4000),
        row!("cuMemHostRegister", 6050, memory::cuMemHostRegister_v2),
        row!("cuMemHostUnregister", 4000, memory::cuMemHostUnregister),
        row!("cuMemHostGetDevicePointer", 2020),
        row!(
            "cuMemHostGetDevicePointer",
            3020,
            memory::cuMemHostGetDevicePointer_v2
        ),
        row!("cuMemHostGetFlags", 2030, memory::cuMemHostGetFlags),
        row!("cuPointerGetAttribute", 4000, memory::cuPointerGetAttribute),
        row!(
            "cuPointerGetAttributes",
            7000,
            memory::cuPointerGetAttributes
        ),
        // stream-ordered allocation and pools
        row!(
            "cuMemAllocAsync",
            11020,
            pool::cuMemAllocAsync,
            pool::cuMemAllocAsync_ptsz
        ),
        row!(
            "cuMemAllocFromPoolAsync",
            11020,
            pool::cuMemAllocFromPoolAsync,
            pool::cuMemAllocFromPoolAsync_ptsz
        ),
        row!(
            "cuMemFreeAsync",
            11020,
            pool::cuMemFreeAsync,
            pool::cuMemFreeAsync_ptsz
        ),
        row!("cuMemPoolCreate", 11020, pool::cuMemPoolCreate),
        row!("cuMemPoolDestroy", 11020, pool::cuMemPoolDestroy),
        row!("cuMemPoolTrimTo", 11020, pool::cuMemPoolTrimTo),
        row!("cuMemPoolSetAttribute", 11020, pool::cuMemPoolSetAttribute),
        row!("cuMemPoolGetAttribute", 11020, pool::cuMemPoolGetAttribute),
        row!("cuMemPoolSetAccess", 11020, pool::cuMemPoolSetAccess),
        row!("cuMemPoolGetAccess", 11020, pool::cuMemPoolGetAccess),
        // arrays
        row!("cuArrayCreate", 2000),
        row!("cuArrayCreate", 3020, array::cuArrayCreate_v2),
        row!("cuArray3DCreate", 2000),
        row!("cuArray3DCreate", 3020, array::cuArray3DCreate_v2),
        row!("cuArrayGetDescriptor", 2000),
        row!("cuArrayGetDescriptor", 3020, array::cuArrayGetDescriptor_v2),
        row!("cuArray3DGetDescriptor", 2000),
        row!(
            "cuArray3DGetDescriptor",
            3020,
            array::cuArray3DGetDescriptor_v2
        ),
        row!("cuArrayDestroy", 2000, array::cuArrayDestroy),
        row!(
            "cuMipmappedArrayCreate",
            5000,
            array::cuMipmappedArrayCreate
        ),
        row!(
            "cuMipmappedArrayDestroy",
            5000,
            array::cuMipmappedArrayDestroy
        ),
        // virtual memory management
        row!(
            "cuMemGetAllocationGranularity",
            10020,
            vmm::cuMemGetAllocationGranularity
        ),
        row!("cuMemCreate", 10020, vmm::cuMemCreate),
        row!("cuMemRelease", 10020, vmm::cuMemRelease),
        row!("cuMemAddressReserve", 10020, vmm::cuMemAddressReserve),
        row!("cuMemAddressFree", 10020, vmm::cuMemAddressFree),
        row!("cuMemMap", 10020, vmm::cuMemMap),
        row!("cuMemUnmap", 10020, vmm::cuMemUnmap),
        row!("cuMemSetAccess", 10020, vmm::cuMemSetAccess),
        row!("cuMemGetAccess", 10020, vmm::cuMemGetAccess),
        row!(
            "cuMemGetAllocationPropertiesFromHandle",
            10020,
            vmm::cuMemGetAllocationPropertiesFromHandle
        ),
        row!(
            "cuMemRetainAllocationHandle",
            11000,
            vmm::cuMemRetainAllocationHandle
        ),
        // copies and memsets
        row!("cuMemcpy", 4000, copy::cuMemcpy, copy::cuMemcpy_ptds),
        row!(
            "cuMemcpyAsync",
            4000,
            copy::cuMemcpyAsync,
            copy::cuMemcpyAsync_ptsz
        ),
        row!(
            "cuMemcpyPeer",
            4000,
            copy::cuMemcpyPeer,
            copy::cuMemcpyPeer_ptds
        ),
        row!(
            "cuMemcpyPeerAsync",
            4000,
            copy::cuMemcpyPeerAsync,
            copy::cuMemcpyPeerAsync_ptsz
        ),
        row!("cuMemcpyHtoD", 2000),
        row!(
            "cuMemcpyHtoD",
            3020,
            copy::cuMemcpyHtoD_v2,
            copy::cuMemcpyHtoD_v2_ptds
        ),
        row!("cuMemcpyDtoH", 2000),
        row!(
            "cuMemcpyDtoH",
            3020,
            copy::cuMemcpyDtoH_v2,
            copy::cuMemcpyDtoH_v2_ptds
        ),
        row!("cuMemcpyDtoD", 2000),
        row!(
            "cuMemcpyDtoD",
            3020,
            copy::cuMemcpyDtoD_v2,
            copy::cuMemcpyDtoD_v2_ptds
        ),
        row!("cuMemcpyHtoDAsync", 2000),
        row!(
            "cuMemcpyHtoDAsync",
            3020,
            copy::cuMemcpyHtoDAsync_v2,
            copy::cuMemcpyHtoDAsync_v2_ptsz
        ),
        row!("cuMemcpyDtoHAsync", 2000),
        row!(
            "cuMemcpyDtoHAsync",
            3020,
            copy::cuMemcpyDtoHAsync_v2,
            copy::cuMemcpyDtoHAsync_v2_ptsz
        ),
        row!("cuMemcpyDtoDAsync", 3000),
        row!(
            "cuMemcpyDtoDAsync",
            3020,
            copy::cuMemcpyDtoDAsync_v2,
            copy::cuMemcpyDtoDAsync_v2_ptsz
        ),
        row!("cuMemcpy2D", 2000),
        row!(
            "cuMemcpy2D",
            3020,
            copy::cuMemcpy2D_v2,
            copy::cuMemcpy2D_v2_ptds
        ),
        row!("cuMemcpy2DUnaligned", 2000),
        row!(
            "cuMemcpy2DUnaligned",
            3020,
            copy::cuMemcpy2DUnaligned_v2,
            copy::cuMemcpy2DUnaligned_v2_ptds
        ),
        row!("cuMemcpy2DAsync", 2000),
        row!(
            "cuMemcpy2DAsync",
            3020,
            copy::cuMemcpy2DAsync_v2,
            copy::cuMemcpy2DAsync_v2_ptsz
        ),
        row!("cuMemcpy3D", 2000),
        row!(
            "cuMemcpy3D",
            3020,
            copy::cuMemcpy3D_v2,
            copy::cuMemcpy3D_v2_ptds
        ),
        row!("cuMemcpy3DAsync", 2000),
        row!(
            "cuMemcpy3DAsync",
            3020,
            copy::cuMemcpy3DAsync_v2,
            copy::cuMemcpy3DAsync_v2_ptsz
        ),
        row!("cuMemsetD8", 2000),
        row!(
            "cuMemsetD8",
            3020,
            copy::cuMemsetD8_v2,
            copy::cuMemsetD8_v2_ptds
        ),
        row!("cuMemsetD16", 2000),
        row!(
            "cuMemsetD16",
            3020,
            copy::cuMemsetD16_v2,
            copy::cuMemsetD16_v2_ptds
        ),
        row!("cuMemsetD32", 2000),
        row!(
            "cuMemsetD32",
            3020,
            copy::cuMemsetD32_v2,
            copy::cuMemsetD32_v2_ptds
        ),
        row!(
            "cuMemsetD8Async",
            3020,
            copy::cuMemsetD8Async,
            copy::cuMemsetD8Async_ptsz
        ),
        row!(
            "cuMemsetD16Async",
            3020,
            copy::cuMemsetD16Async,
            copy::cuMemsetD16Async_ptsz
        ),
        row!(
            "cuMemsetD32Async",
            3020,
            copy::cuMemsetD32Async,
            copy::cuMemsetD32Async_ptsz
        ),
        row!("cuMemsetD2D8", 2000),
        row!(
            "cuMemsetD2D8",
            3020,
            copy::cuMemsetD2D8_v2,
            copy::cuMemsetD2D8_v2_ptds
        ),
        row!("cuMemsetD2D16", 2000),
        row!(
            "cuMemsetD2D16",
            3020,
            copy::cuMemsetD2D16_v2,
            copy::cuMemsetD2D16_v2_ptds
        ),
        row!("cuMemsetD2D32", 2000),
        row!(
            "cuMemsetD2D32",
            3020,
            copy::cuMemsetD2D32_v2,
            copy::cuMemsetD2D32_v2_ptds
        ),
        row!(
            "cuMemsetD2D8Async",
            3020,
            copy::cuMemsetD2D8Async,
            copy::cuMemsetD2D8Async_ptsz
        ),
        row!(
            "cuMemsetD2D16Async",
            3020,
            copy::cuMemsetD2D16Async,
            copy::cuMemsetD2D16Async_ptsz
        ),
        row!(
            "cuMemsetD2D32Async",
            3020,
            copy::cuMemsetD2D32Async,
            copy::cuMemsetD2D32Async_ptsz
        ),
        // streams
        row!("cuStreamCreate", 2000, stream::cuStreamCreate),
        row!(
            "cuStreamCreateWithPriority",
            5050,
            stream::cuStreamCreateWithPriority
        ),
        row!("cuStreamDestroy", 2000),
        row!("cuStreamDestroy", 4000, stream::cuStreamDestroy_v2),
        row!(
            "cuStreamQuery",
            2000,
            stream::cuStreamQuery,
            stream::cuStreamQuery_ptsz
        ),
        row!(
            "cuStreamSynchronize",
            2000,
            stream::cuStreamSynchronize,
            stream::cuStreamSynchronize_ptsz
        ),
        row!(
            "cuStreamWaitEvent",
            3020,
            stream::cuStreamWaitEvent,
            stream::cuStreamWaitEvent_ptsz
        ),
        row!(
            "cuStreamGetPriority",
            5050,
            stream::cuStreamGetPriority,
            stream::cuStreamGetPriority_ptsz
        ),
        row!(
            "cuStreamGetFlags",
            5050,
            stream::cuStreamGetFlags,
            stream::cuStreamGetFlags_ptsz
        ),
        row!(
            "cuStreamGetCtx",
            9020,
            stream::cuStreamGetCtx,
            stream::cuStreamGetCtx_ptsz
        ),
        row!(
            "cuStreamGetCtx",
            12050,
            stream::cuStreamGetCtx_v2,
            stream::cuStreamGetCtx_v2_ptsz
        ),
        row!(
            "cuStreamGetId",
            12000,
            stream::cuStreamGetId,
            stream::cuStreamGetId_ptsz
        ),
        row!(
            "cuStreamGetDevice",
            12080,
            stream::cuStreamGetDevice,
            stream::cuStreamGetDevice_ptsz
        ),
        row!(
            "cuLaunchHostFunc",
            10000,
            stream::cuLaunchHostFunc,
            stream::cuLaunchHostFunc_ptsz
        ),
        row!(
            "cuLaunchHostFunc",
            13010,
            stream::cuLaunchHostFunc_v2,
            stream::cuLaunchHostFunc_v2_ptsz
        ),
        row!(
            "cuStreamAddCallback",
            5000,
            stream::cuStreamAddCallback,
            stream::cuStreamAddCallback_ptsz
        ),
        // stream capture
        row!(
            "cuStreamBeginCapture",
            10000,
            capture::cuStreamBeginCapture,
            capture::cuStreamBeginCapture_ptsz
        ),
        row!(
            "cuStreamBeginCapture",
            10010,
            capture::cuStreamBeginCapture_v2,
            capture::cuStreamBeginCapture_v2_ptsz
        ),
        row!(
            "cuStreamEndCapture",
            10000,
            capture::cuStreamEndCapture,
            capture::cuStreamEndCapture_ptsz
        ),
        row!(
            "cuStreamIsCapturing",
            10000,
            capture::cuStreamIsCapturing,
            capture::cuStreamIsCapturing_ptsz
        ),
        row!(
            "cuStreamGetCaptureInfo",
            10010,
            capture::cuStreamGetCaptureInfo,
            capture::cuStreamGetCaptureInfo_ptsz
        ),
        row!(
            "cuStreamGetCaptureInfo",
            11030,
            capture::cuStreamGetCaptureInfo_v2,
            capture::cuStreamGetCaptureInfo_v2_ptsz
        ),
        row!(
            "cuStreamGetCaptureInfo",
            12030,
            capture::cuStreamGetCaptureInfo_v3,
            capture::cuStreamGetCaptureInfo_v3_ptsz
        ),
        row!(
            "cuThreadExchangeStreamCaptureMode",
            10010,
            capture::cuThreadExchangeStreamCaptureMode
        ),
        // events
        row!("cuEventCreate", 2000, event::cuEventCreate),
        row!(
            "cuEventRecord",
            2000,
            event::cuEventRecord,
            event::cuEventRecord_ptsz
        ),
        row!(
            "cuEventRecordWithFlags",
            11010,
            event::cuEventRecordWithFlags,
            event::cuEventRecordWithFlags_ptsz
        ),
        row!("cuEventQuery", 2000, event::cuEventQuery),
        row!("cuEventSynchronize", 2000, event::cuEventSynchronize),
        row!("cuEventElapsedTime", 2000, event::cuEventElapsedTime),
        row!("cuEventElapsedTime", 12080, event::cuEventElapsedTime_v2),
        row!("cuEventDestroy", 2000),
        row!("cuEventDestroy", 4000, event::cuEventDestroy_v2),
        // modules, libraries, kernels
        row!("cuModuleLoadData", 2000, module::cuModuleLoadData),
        row!("cuModuleLoadDataEx", 2010, module::cuModuleLoadDataEx),
        row!("cuModuleLoadFatBinary", 2000, module::cuModuleLoadFatBinary),
        row!("cuModuleUnload", 2000, module::cuModuleUnload),
        row!("cuModuleGetFunction", 2000, module::cuModuleGetFunction),
        row!("cuModuleGetGlobal", 2000),
        row!("cuModuleGetGlobal", 3020, module::cuModuleGetGlobal_v2),
        row!(
            "cuModuleGetLoadingMode",
            11070,
            module::cuModuleGetLoadingMode
        ),
        row!("cuLibraryLoadData", 12000, module::cuLibraryLoadData),
        row!("cuLibraryUnload", 12000, module::cuLibraryUnload),
        row!("cuLibraryGetKernel", 12000, module::cuLibraryGetKernel),
        row!("cuLibraryGetModule", 12000, module::cuLibraryGetModule),
        row!("cuLibraryGetGlobal", 12000, module::cuLibraryGetGlobal),
        row!("cuKernelGetFunction", 12000, module::cuKernelGetFunction),
        row!("cuKernelGetLibrary", 12050, module::cuKernelGetLibrary),
        row!("cuKernelGetName", 12030, module::cuKernelGetName),
        row!("cuKernelGetAttribute", 12000, module::cuKernelGetAttribute),
        row!("cuKernelSetAttribute", 12000, module::cuKernelSetAttribute),
        row!(
            "cuKernelSetCacheConfig",
            12000,
            module::cuKernelSetCacheConfig
        ),
        row!("cuFuncGetModule", 11000, module::cuFuncGetModule),
        row!("cuFuncGetName", 12030, module::cuFuncGetName),
        row!("cuFuncGetAttribute", 2020, module::cuFuncGetAttribute),
        row!("cuFuncSetAttribute", 9000, module::cuFuncSetAttribute),
        row!("cuFuncSetCacheConfig", 3000, module::cuFuncSetCacheConfig),
        row!(
            "cuOccupancyMaxActiveBlocksPerMultiprocessor",
            6050,
            module::cuOccupancyMaxActiveBlocksPerMultiprocessor
        ),
        row!(
            "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags",
            7000,
            module::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags
        ),
        row!(
            "cuOccupancyAvailableDynamicSMemPerBlock",
            10020,
            module::cuOccupancyAvailableDynamicSMemPerBlock
        ),
        // launches
        row!(
            "cuLaunchKernel",
            4000,
            launch::cuLaunchKernel,
            launch::cuLaunchKernel_ptsz
        ),
        row!(
            "cuLaunchKernelEx",
            11060,
            launch::cuLaunchKernelEx,
            launch::cuLaunchKernelEx_ptsz
        ),
        row!(
            "cuLaunchCooperativeKernel",
            9000,
            launch::cuLaunchCooperativeKernel,
            launch::cuLaunchCooperativeKernel_ptsz
        ),
        // graphs
        row!("cuGraphCreate", 10000, graph::cuGraphCreate),
        row!("cuGraphDestroy", 10000, graph::cuGraphDestroy),
        row!("cuGraphAddKernelNode", 10000, graph::cuGraphAddKernelNode),
        row!(
            "cuGraphAddKernelNode",
            12000,
            graph::cuGraphAddKernelNode_v2
        ),
        row!("cuGraphAddMemcpyNode", 10000, graph::cuGraphAddMemcpyNode),
        row!("cuGraphAddMemsetNode", 10000, graph::cuGraphAddMemsetNode),
        row!("cuGraphAddEmptyNode", 10000, graph::cuGraphAddEmptyNode),
        row!("cuGraphGetNodes", 10000, graph::cuGraphGetNodes),
        row!("cuGraphGetRootNodes", 10000, graph::cuGraphGetRootNodes),
        row!("cuGraphNodeGetType", 10000, graph::cuGraphNodeGetType),
        row!("cuGraphKernelNodeGetParams", 10000),
        row!(
            "cuGraphKernelNodeGetParams",
            12000,
            graph::cuGraphKernelNodeGetParams_v2
        ),
        row!("cuGraphInstantiate", 10000),
        row!("cuGraphInstantiate", 11000),
        row!(
            "cuGraphInstantiateWithFlags",
            11040,
            graph::cuGraphInstantiateWithFlags
        ),
        row!(
            "cuGraphInstantiateWithParams",
            12000,
            graph::cuGraphInstantiateWithParams,
            graph::cuGraphInstantiateWithParams_ptsz
        ),
        row!(
            "cuGraphUpload",
            11010,
            graph::cuGraphUpload,
            graph::cuGraphUpload_ptsz
        ),
        row!(
            "cuGraphLaunch",
            10000,
            graph::cuGraphLaunch,
            graph::cuGraphLaunch_ptsz
        ),
        row!("cuGraphExecDestroy", 10000, graph::cuGraphExecDestroy),
    ]
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
    use std::collections::{BTreeSet, HashMap};

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

    /// `PFN_<name>_v<version>[_ptsz|_ptds]` typedefs of the pinned toolkit.
    fn typedefs() -> HashMap<String, (BTreeSet<i32>, bool)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("repo root")
            .to_path_buf();
        let env = std::fs::read_to_string(root.join(".cuda/env"))
            .expect(".cuda/env is missing: run scripts/setup-cuda-toolkit.sh");
        let home = env
            .lines()
            .find_map(|l| l.strip_prefix("CUDA_HOME="))
            .expect("CUDA_HOME in .cuda/env");
        let text = std::fs::read_to_string(
            std::path::Path::new(home.trim()).join("include/cudaTypedefs.h"),
        )
        .expect("cudaTypedefs.h");
        let mut m: HashMap<String, (BTreeSet<i32>, bool)> = HashMap::new();
        for part in text.split("PFN_").skip(1) {
            let ident: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let (base, pt) = match ident
                .strip_suffix("_ptsz")
                .or_else(|| ident.strip_suffix("_ptds"))
            {
                Some(b) => (b, true),
                None => (ident.as_str(), false),
            };
            let Some((name, ver)) = base.rsplit_once("_v") else {
                continue;
            };
            let Ok(ver) = ver.parse::<i32>() else {
                continue;
            };
            let e = m.entry(name.to_string()).or_default();
            if pt {
                e.1 = true;
            } else {
                e.0.insert(ver);
            }
        }
        m
    }

    #[test]
    fn rows_match_the_abi_versions_in_cuda_typedefs() {
        let td = typedefs();
        let mut by_name: HashMap<&str, Vec<Route>> = HashMap::new();
        for r in rows() {
            by_name.entry(r.name).or_default().push(r);
        }
        for (name, rs) in &by_name {
            let (versions, has_pt) = td
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is not in cudaTypedefs.h"));
            let mine: BTreeSet<i32> = rs.iter().map(|r| r.version).collect();
            assert_eq!(
                &mine, versions,
                "{name}: routed ABI versions differ from cudaTypedefs.h"
            );
            for r in rs.iter().filter(|r| r.f.is_some()) {
                assert_eq!(
                    r.per_thread.is_some(),
                    *has_pt,
                    "{name}@{}: per-thread variant mismatch",
                    r.version
                );
            }
        }
    }
}
