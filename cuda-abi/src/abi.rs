//! The ABI versions of the CUDA driver entry points tslice deals with: one
//! table for both the shim's hooks (`shim/src/hooks/table.rs` takes each
//! row's base name, version and stream variant from here) and the simulated
//! driver's `cuGetProcAddress` routing (`simcuda/src/routing.rs` maps each
//! row's exports to its functions). The test at the bottom checks every row
//! against the toolkit's `cudaTypedefs.h`, where `PFN_cuMemAlloc_v3020` says
//! that `cuGetProcAddress("cuMemAlloc", 3020..)` means the export
//! `cuMemAlloc_v2`.
//!
//! Each row is one ABI of a base name, valid from `since` until the next row
//! of the same name. `export` is the driver's symbol for it (None: an ABI
//! that neither the shim nor the simulator implements, whose lookups must
//! find nothing rather than a function of another signature); `per_thread`
//! its per-thread-default-stream twin (`_ptsz`/`_ptds`) where one exists.

/// One ABI of an entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abi {
    pub base: &'static str,
    pub since: i32,
    pub export: Option<&'static str>,
    pub per_thread: Option<&'static str>,
}

const fn abi(
    base: &'static str,
    since: i32,
    export: Option<&'static str>,
    per_thread: Option<&'static str>,
) -> Abi {
    Abi {
        base,
        since,
        export,
        per_thread,
    }
}

/// Every ABI, grouped by subject; rows of one name are oldest first.
#[rustfmt::skip]
pub const ABIS: &[Abi] = &[
    // init, errors, lookup
    abi("cuInit", 2000, Some("cuInit"), None),
    abi("cuDriverGetVersion", 2020, Some("cuDriverGetVersion"), None),
    abi("cuGetErrorString", 6000, Some("cuGetErrorString"), None),
    abi("cuGetErrorName", 6000, Some("cuGetErrorName"), None),
    abi("cuGetProcAddress", 11030, Some("cuGetProcAddress"), None),
    abi("cuGetProcAddress", 12000, Some("cuGetProcAddress_v2"), None),
    abi("cuGetExportTable", 3000, Some("cuGetExportTable"), None),
    // devices
    abi("cuDeviceGet", 2000, Some("cuDeviceGet"), None),
    abi("cuDeviceGetCount", 2000, Some("cuDeviceGetCount"), None),
    abi("cuDeviceGetName", 2000, Some("cuDeviceGetName"), None),
    abi("cuDeviceTotalMem", 2000, None, None),
    abi("cuDeviceTotalMem", 3020, Some("cuDeviceTotalMem_v2"), None),
    abi("cuDeviceGetAttribute", 2000, Some("cuDeviceGetAttribute"), None),
    abi("cuDeviceGetUuid", 9020, Some("cuDeviceGetUuid"), None),
    abi("cuDeviceGetUuid", 11040, Some("cuDeviceGetUuid_v2"), None),
    abi("cuDeviceGetPCIBusId", 4010, Some("cuDeviceGetPCIBusId"), None),
    abi("cuDeviceGetByPCIBusId", 4010, Some("cuDeviceGetByPCIBusId"), None),
    abi("cuDeviceCanAccessPeer", 4000, Some("cuDeviceCanAccessPeer"), None),
    abi("cuCtxEnablePeerAccess", 4000, Some("cuCtxEnablePeerAccess"), None),
    abi("cuCtxDisablePeerAccess", 4000, Some("cuCtxDisablePeerAccess"), None),
    abi("cuProfilerStart", 4000, Some("cuProfilerStart"), None),
    abi("cuTexObjectCreate", 5000, Some("cuTexObjectCreate"), None),
    abi("cuTexObjectDestroy", 5000, Some("cuTexObjectDestroy"), None),
    abi("cuTexObjectGetResourceDesc", 5000, Some("cuTexObjectGetResourceDesc"), None),
    abi("cuTexObjectGetTextureDesc", 5000, Some("cuTexObjectGetTextureDesc"), None),
    abi("cuTexObjectGetResourceViewDesc", 5000, Some("cuTexObjectGetResourceViewDesc"), None),
    abi("cuProfilerStop", 4000, Some("cuProfilerStop"), None),
    abi("cuDeviceGetP2PAttribute", 8000, Some("cuDeviceGetP2PAttribute"), None),
    abi("cuDeviceGetDefaultMemPool", 11020, Some("cuDeviceGetDefaultMemPool"), None),
    abi("cuDeviceGetMemPool", 11020, Some("cuDeviceGetMemPool"), None),
    abi("cuDeviceSetMemPool", 11020, Some("cuDeviceSetMemPool"), None),
    abi("cuMemGetDefaultMemPool", 13000, Some("cuMemGetDefaultMemPool"), None),
    abi("cuMemGetMemPool", 13000, Some("cuMemGetMemPool"), None),
    abi("cuDevicePrimaryCtxRetain", 7000, Some("cuDevicePrimaryCtxRetain"), None),
    abi("cuDevicePrimaryCtxRelease", 7000, Some("cuDevicePrimaryCtxRelease"), None),
    abi("cuDevicePrimaryCtxRelease", 11000, Some("cuDevicePrimaryCtxRelease_v2"), None),
    abi("cuDevicePrimaryCtxSetFlags", 7000, Some("cuDevicePrimaryCtxSetFlags"), None),
    abi("cuDevicePrimaryCtxSetFlags", 11000, Some("cuDevicePrimaryCtxSetFlags_v2"), None),
    abi("cuDevicePrimaryCtxReset", 7000, Some("cuDevicePrimaryCtxReset"), None),
    abi("cuDevicePrimaryCtxReset", 11000, Some("cuDevicePrimaryCtxReset_v2"), None),
    abi("cuDevicePrimaryCtxGetState", 7000, Some("cuDevicePrimaryCtxGetState"), None),
    // contexts
    abi("cuCtxCreate", 2000, None, None),
    abi("cuCtxCreate", 3020, Some("cuCtxCreate_v2"), None),
    abi("cuCtxCreate", 11040, Some("cuCtxCreate_v3"), None),
    abi("cuCtxCreate", 12050, Some("cuCtxCreate_v4"), None),
    abi("cuCtxDestroy", 2000, None, None),
    abi("cuCtxDestroy", 4000, Some("cuCtxDestroy_v2"), None),
    abi("cuCtxSetCurrent", 4000, Some("cuCtxSetCurrent"), None),
    abi("cuCtxGetCurrent", 4000, Some("cuCtxGetCurrent"), None),
    abi("cuCtxPushCurrent", 2000, Some("cuCtxPushCurrent"), None),
    abi("cuCtxPushCurrent", 4000, Some("cuCtxPushCurrent_v2"), None),
    abi("cuCtxPopCurrent", 2000, Some("cuCtxPopCurrent"), None),
    abi("cuCtxPopCurrent", 4000, Some("cuCtxPopCurrent_v2"), None),
    abi("cuCtxGetDevice", 2000, Some("cuCtxGetDevice"), None),
    abi("cuCtxGetDevice", 13000, Some("cuCtxGetDevice_v2"), None),
    abi("cuCtxGetFlags", 7000, Some("cuCtxGetFlags"), None),
    abi("cuCtxSetFlags", 12010, Some("cuCtxSetFlags"), None),
    abi("cuCtxGetLimit", 3010, Some("cuCtxGetLimit"), None),
    abi("cuCtxSetLimit", 3010, Some("cuCtxSetLimit"), None),
    abi("cuCtxGetCacheConfig", 3020, Some("cuCtxGetCacheConfig"), None),
    abi("cuCtxSetCacheConfig", 3020, Some("cuCtxSetCacheConfig"), None),
    abi("cuCtxGetStreamPriorityRange", 5050, Some("cuCtxGetStreamPriorityRange"), None),
    abi("cuCtxSynchronize", 2000, Some("cuCtxSynchronize"), None),
    abi("cuCtxSynchronize", 13000, Some("cuCtxSynchronize_v2"), None),
    abi("cuCtxGetApiVersion", 3020, Some("cuCtxGetApiVersion"), None),
    abi("cuCtxGetId", 12000, Some("cuCtxGetId"), None),
    // memory
    abi("cuMemGetInfo", 2000, None, None),
    abi("cuMemGetInfo", 3020, Some("cuMemGetInfo_v2"), None),
    abi("cuMemAlloc", 2000, Some("cuMemAlloc"), None),
    abi("cuMemAlloc", 3020, Some("cuMemAlloc_v2"), None),
    abi("cuMemFree", 2000, Some("cuMemFree"), None),
    abi("cuMemFree", 3020, Some("cuMemFree_v2"), None),
    abi("cuMemAllocPitch", 2000, None, None),
    abi("cuMemAllocPitch", 3020, Some("cuMemAllocPitch_v2"), None),
    abi("cuMemAllocManaged", 6000, Some("cuMemAllocManaged"), None),
    abi("cuMemGetAddressRange", 2000, None, None),
    abi("cuMemGetAddressRange", 3020, Some("cuMemGetAddressRange_v2"), None),
    abi("cuMemAllocHost", 2000, None, None),
    abi("cuMemAllocHost", 3020, Some("cuMemAllocHost_v2"), None),
    abi("cuMemHostAlloc", 2020, Some("cuMemHostAlloc"), None),
    abi("cuMemFreeHost", 2000, Some("cuMemFreeHost"), None),
    abi("cuMemHostRegister", 4000, None, None),
    abi("cuMemHostRegister", 6050, Some("cuMemHostRegister_v2"), None),
    abi("cuMemHostUnregister", 4000, Some("cuMemHostUnregister"), None),
    abi("cuMemHostGetDevicePointer", 2020, None, None),
    abi("cuMemHostGetDevicePointer", 3020, Some("cuMemHostGetDevicePointer_v2"), None),
    abi("cuMemHostGetFlags", 2030, Some("cuMemHostGetFlags"), None),
    abi("cuPointerGetAttribute", 4000, Some("cuPointerGetAttribute"), None),
    abi("cuPointerGetAttributes", 7000, Some("cuPointerGetAttributes"), None),
    // stream-ordered allocation and pools
    abi("cuMemAllocAsync", 11020, Some("cuMemAllocAsync"), Some("cuMemAllocAsync_ptsz")),
    abi("cuMemAllocFromPoolAsync", 11020, Some("cuMemAllocFromPoolAsync"), Some("cuMemAllocFromPoolAsync_ptsz")),
    abi("cuMemFreeAsync", 11020, Some("cuMemFreeAsync"), Some("cuMemFreeAsync_ptsz")),
    abi("cuMemPoolCreate", 11020, Some("cuMemPoolCreate"), None),
    abi("cuMemPoolDestroy", 11020, Some("cuMemPoolDestroy"), None),
    abi("cuMemPoolTrimTo", 11020, Some("cuMemPoolTrimTo"), None),
    abi("cuMemPoolSetAttribute", 11020, Some("cuMemPoolSetAttribute"), None),
    abi("cuMemPoolGetAttribute", 11020, Some("cuMemPoolGetAttribute"), None),
    abi("cuMemPoolSetAccess", 11020, Some("cuMemPoolSetAccess"), None),
    abi("cuMemPoolGetAccess", 11020, Some("cuMemPoolGetAccess"), None),
    // arrays
    abi("cuArrayCreate", 2000, None, None),
    abi("cuArrayCreate", 3020, Some("cuArrayCreate_v2"), None),
    abi("cuArray3DCreate", 2000, None, None),
    abi("cuArray3DCreate", 3020, Some("cuArray3DCreate_v2"), None),
    abi("cuArrayGetDescriptor", 2000, None, None),
    abi("cuArrayGetDescriptor", 3020, Some("cuArrayGetDescriptor_v2"), None),
    abi("cuArray3DGetDescriptor", 2000, None, None),
    abi("cuArray3DGetDescriptor", 3020, Some("cuArray3DGetDescriptor_v2"), None),
    abi("cuArrayDestroy", 2000, Some("cuArrayDestroy"), None),
    abi("cuMipmappedArrayCreate", 5000, Some("cuMipmappedArrayCreate"), None),
    abi("cuMipmappedArrayDestroy", 5000, Some("cuMipmappedArrayDestroy"), None),
    // virtual memory management
    abi("cuMemGetAllocationGranularity", 10020, Some("cuMemGetAllocationGranularity"), None),
    abi("cuMemCreate", 10020, Some("cuMemCreate"), None),
    abi("cuMemRelease", 10020, Some("cuMemRelease"), None),
    abi("cuMemAddressReserve", 10020, Some("cuMemAddressReserve"), None),
    abi("cuMemAddressFree", 10020, Some("cuMemAddressFree"), None),
    abi("cuMemMap", 10020, Some("cuMemMap"), None),
    abi("cuMemUnmap", 10020, Some("cuMemUnmap"), None),
    abi("cuMemSetAccess", 10020, Some("cuMemSetAccess"), None),
    abi("cuMemGetAccess", 10020, Some("cuMemGetAccess"), None),
    abi("cuMemGetAllocationPropertiesFromHandle", 10020, Some("cuMemGetAllocationPropertiesFromHandle"), None),
    abi("cuMemRetainAllocationHandle", 11000, Some("cuMemRetainAllocationHandle"), None),
    // copies and memsets
    abi("cuMemcpy", 4000, Some("cuMemcpy"), Some("cuMemcpy_ptds")),
    abi("cuMemcpyAsync", 4000, Some("cuMemcpyAsync"), Some("cuMemcpyAsync_ptsz")),
    abi("cuMemcpyPeer", 4000, Some("cuMemcpyPeer"), Some("cuMemcpyPeer_ptds")),
    abi("cuMemcpyPeerAsync", 4000, Some("cuMemcpyPeerAsync"), Some("cuMemcpyPeerAsync_ptsz")),
    abi("cuMemcpyHtoD", 2000, None, None),
    abi("cuMemcpyHtoD", 3020, Some("cuMemcpyHtoD_v2"), Some("cuMemcpyHtoD_v2_ptds")),
    abi("cuMemcpyDtoH", 2000, None, None),
    abi("cuMemcpyDtoH", 3020, Some("cuMemcpyDtoH_v2"), Some("cuMemcpyDtoH_v2_ptds")),
    abi("cuMemcpyDtoD", 2000, None, None),
    abi("cuMemcpyDtoD", 3020, Some("cuMemcpyDtoD_v2"), Some("cuMemcpyDtoD_v2_ptds")),
    abi("cuMemcpyHtoDAsync", 2000, None, None),
    abi("cuMemcpyHtoDAsync", 3020, Some("cuMemcpyHtoDAsync_v2"), Some("cuMemcpyHtoDAsync_v2_ptsz")),
    abi("cuMemcpyDtoHAsync", 2000, None, None),
    abi("cuMemcpyDtoHAsync", 3020, Some("cuMemcpyDtoHAsync_v2"), Some("cuMemcpyDtoHAsync_v2_ptsz")),
    abi("cuMemcpyDtoDAsync", 3000, None, None),
    abi("cuMemcpyDtoDAsync", 3020, Some("cuMemcpyDtoDAsync_v2"), Some("cuMemcpyDtoDAsync_v2_ptsz")),
    abi("cuMemcpy2D", 2000, None, None),
    abi("cuMemcpy2D", 3020, Some("cuMemcpy2D_v2"), Some("cuMemcpy2D_v2_ptds")),
    abi("cuMemcpy2DUnaligned", 2000, None, None),
    abi("cuMemcpy2DUnaligned", 3020, Some("cuMemcpy2DUnaligned_v2"), Some("cuMemcpy2DUnaligned_v2_ptds")),
    abi("cuMemcpy2DAsync", 2000, None, None),
    abi("cuMemcpy2DAsync", 3020, Some("cuMemcpy2DAsync_v2"), Some("cuMemcpy2DAsync_v2_ptsz")),
    abi("cuMemcpy3D", 2000, None, None),
    abi("cuMemcpy3D", 3020, Some("cuMemcpy3D_v2"), Some("cuMemcpy3D_v2_ptds")),
    abi("cuMemcpy3DAsync", 2000, None, None),
    abi("cuMemcpy3DAsync", 3020, Some("cuMemcpy3DAsync_v2"), Some("cuMemcpy3DAsync_v2_ptsz")),
    abi("cuMemsetD8", 2000, None, None),
    abi("cuMemsetD8", 3020, Some("cuMemsetD8_v2"), Some("cuMemsetD8_v2_ptds")),
    abi("cuMemsetD16", 2000, None, None),
    abi("cuMemsetD16", 3020, Some("cuMemsetD16_v2"), Some("cuMemsetD16_v2_ptds")),
    abi("cuMemsetD32", 2000, None, None),
    abi("cuMemsetD32", 3020, Some("cuMemsetD32_v2"), Some("cuMemsetD32_v2_ptds")),
    abi("cuMemsetD8Async", 3020, Some("cuMemsetD8Async"), Some("cuMemsetD8Async_ptsz")),
    abi("cuMemsetD16Async", 3020, Some("cuMemsetD16Async"), Some("cuMemsetD16Async_ptsz")),
    abi("cuMemsetD32Async", 3020, Some("cuMemsetD32Async"), Some("cuMemsetD32Async_ptsz")),
    abi("cuMemsetD2D8", 2000, None, None),
    abi("cuMemsetD2D8", 3020, Some("cuMemsetD2D8_v2"), Some("cuMemsetD2D8_v2_ptds")),
    abi("cuMemsetD2D16", 2000, None, None),
    abi("cuMemsetD2D16", 3020, Some("cuMemsetD2D16_v2"), Some("cuMemsetD2D16_v2_ptds")),
    abi("cuMemsetD2D32", 2000, None, None),
    abi("cuMemsetD2D32", 3020, Some("cuMemsetD2D32_v2"), Some("cuMemsetD2D32_v2_ptds")),
    abi("cuMemsetD2D8Async", 3020, Some("cuMemsetD2D8Async"), Some("cuMemsetD2D8Async_ptsz")),
    abi("cuMemsetD2D16Async", 3020, Some("cuMemsetD2D16Async"), Some("cuMemsetD2D16Async_ptsz")),
    abi("cuMemsetD2D32Async", 3020, Some("cuMemsetD2D32Async"), Some("cuMemsetD2D32Async_ptsz")),
    // streams
    abi("cuStreamCreate", 2000, Some("cuStreamCreate"), None),
    abi("cuStreamCreateWithPriority", 5050, Some("cuStreamCreateWithPriority"), None),
    abi("cuStreamDestroy", 2000, None, None),
    abi("cuStreamDestroy", 4000, Some("cuStreamDestroy_v2"), None),
    abi("cuStreamQuery", 2000, Some("cuStreamQuery"), Some("cuStreamQuery_ptsz")),
    abi("cuStreamSynchronize", 2000, Some("cuStreamSynchronize"), Some("cuStreamSynchronize_ptsz")),
    abi("cuStreamWaitEvent", 3020, Some("cuStreamWaitEvent"), Some("cuStreamWaitEvent_ptsz")),
    abi("cuStreamGetPriority", 5050, Some("cuStreamGetPriority"), Some("cuStreamGetPriority_ptsz")),
    abi("cuStreamGetAttribute", 11000, Some("cuStreamGetAttribute"), Some("cuStreamGetAttribute_ptsz")),
    abi("cuStreamSetAttribute", 11000, Some("cuStreamSetAttribute"), Some("cuStreamSetAttribute_ptsz")),
    abi("cuStreamGetFlags", 5050, Some("cuStreamGetFlags"), Some("cuStreamGetFlags_ptsz")),
    abi("cuStreamGetCtx", 9020, Some("cuStreamGetCtx"), Some("cuStreamGetCtx_ptsz")),
    abi("cuStreamGetCtx", 12050, Some("cuStreamGetCtx_v2"), Some("cuStreamGetCtx_v2_ptsz")),
    abi("cuStreamGetId", 12000, Some("cuStreamGetId"), Some("cuStreamGetId_ptsz")),
    abi("cuStreamGetDevice", 12080, Some("cuStreamGetDevice"), Some("cuStreamGetDevice_ptsz")),
    abi("cuLaunchHostFunc", 10000, Some("cuLaunchHostFunc"), Some("cuLaunchHostFunc_ptsz")),
    abi("cuLaunchHostFunc", 13010, Some("cuLaunchHostFunc_v2"), Some("cuLaunchHostFunc_v2_ptsz")),
    abi("cuStreamAddCallback", 5000, Some("cuStreamAddCallback"), Some("cuStreamAddCallback_ptsz")),
    // stream capture
    abi("cuStreamBeginCapture", 10000, Some("cuStreamBeginCapture"), Some("cuStreamBeginCapture_ptsz")),
    abi("cuStreamBeginCapture", 10010, Some("cuStreamBeginCapture_v2"), Some("cuStreamBeginCapture_v2_ptsz")),
    abi("cuStreamEndCapture", 10000, Some("cuStreamEndCapture"), Some("cuStreamEndCapture_ptsz")),
    // Capture entry points the shim counts and the simulator lacks.
    abi("cuStreamBeginCaptureToGraph", 12030, Some("cuStreamBeginCaptureToGraph"), Some("cuStreamBeginCaptureToGraph_ptsz")),
    abi("cuStreamUpdateCaptureDependencies", 11030, Some("cuStreamUpdateCaptureDependencies"), Some("cuStreamUpdateCaptureDependencies_ptsz")),
    abi("cuStreamUpdateCaptureDependencies", 12030, Some("cuStreamUpdateCaptureDependencies_v2"), Some("cuStreamUpdateCaptureDependencies_v2_ptsz")),
    abi("cuStreamBeginRecaptureToGraph", 13030, Some("cuStreamBeginRecaptureToGraph"), Some("cuStreamBeginRecaptureToGraph_ptsz")),
    abi("cuStreamBeginCaptureToCig", 13010, Some("cuStreamBeginCaptureToCig"), Some("cuStreamBeginCaptureToCig_ptsz")),
    abi("cuStreamEndCaptureToCig", 13010, Some("cuStreamEndCaptureToCig"), Some("cuStreamEndCaptureToCig_ptsz")),
    abi("cuStreamIsCapturing", 10000, Some("cuStreamIsCapturing"), Some("cuStreamIsCapturing_ptsz")),
    abi("cuStreamGetCaptureInfo", 10010, Some("cuStreamGetCaptureInfo"), Some("cuStreamGetCaptureInfo_ptsz")),
    abi("cuStreamGetCaptureInfo", 11030, Some("cuStreamGetCaptureInfo_v2"), Some("cuStreamGetCaptureInfo_v2_ptsz")),
    abi("cuStreamGetCaptureInfo", 12030, Some("cuStreamGetCaptureInfo_v3"), Some("cuStreamGetCaptureInfo_v3_ptsz")),
    abi("cuThreadExchangeStreamCaptureMode", 10010, Some("cuThreadExchangeStreamCaptureMode"), None),
    // events
    abi("cuEventCreate", 2000, Some("cuEventCreate"), None),
    abi("cuEventRecord", 2000, Some("cuEventRecord"), Some("cuEventRecord_ptsz")),
    abi("cuEventRecordWithFlags", 11010, Some("cuEventRecordWithFlags"), Some("cuEventRecordWithFlags_ptsz")),
    abi("cuEventQuery", 2000, Some("cuEventQuery"), None),
    abi("cuEventSynchronize", 2000, Some("cuEventSynchronize"), None),
    abi("cuEventElapsedTime", 2000, Some("cuEventElapsedTime"), None),
    abi("cuEventElapsedTime", 12080, Some("cuEventElapsedTime_v2"), None),
    abi("cuEventDestroy", 2000, None, None),
    abi("cuEventDestroy", 4000, Some("cuEventDestroy_v2"), None),
    // modules, libraries, kernels
    abi("cuModuleLoad", 2000, Some("cuModuleLoad"), None),
    abi("cuModuleLoadData", 2000, Some("cuModuleLoadData"), None),
    abi("cuModuleLoadDataEx", 2010, Some("cuModuleLoadDataEx"), None),
    abi("cuModuleLoadFatBinary", 2000, Some("cuModuleLoadFatBinary"), None),
    abi("cuModuleUnload", 2000, Some("cuModuleUnload"), None),
    abi("cuModuleGetFunction", 2000, Some("cuModuleGetFunction"), None),
    abi("cuModuleGetGlobal", 2000, None, None),
    abi("cuModuleGetGlobal", 3020, Some("cuModuleGetGlobal_v2"), None),
    abi("cuModuleGetLoadingMode", 11070, Some("cuModuleGetLoadingMode"), None),
    abi("cuLibraryLoadData", 12000, Some("cuLibraryLoadData"), None),
    abi("cuLibraryUnload", 12000, Some("cuLibraryUnload"), None),
    abi("cuLibraryGetKernel", 12000, Some("cuLibraryGetKernel"), None),
    abi("cuLibraryGetModule", 12000, Some("cuLibraryGetModule"), None),
    abi("cuLibraryGetGlobal", 12000, Some("cuLibraryGetGlobal"), None),
    abi("cuKernelGetFunction", 12000, Some("cuKernelGetFunction"), None),
    abi("cuKernelGetLibrary", 12050, Some("cuKernelGetLibrary"), None),
    abi("cuKernelGetName", 12030, Some("cuKernelGetName"), None),
    abi("cuKernelGetAttribute", 12000, Some("cuKernelGetAttribute"), None),
    abi("cuKernelSetAttribute", 12000, Some("cuKernelSetAttribute"), None),
    abi("cuKernelSetCacheConfig", 12000, Some("cuKernelSetCacheConfig"), None),
    abi("cuFuncGetModule", 11000, Some("cuFuncGetModule"), None),
    abi("cuFuncGetName", 12030, Some("cuFuncGetName"), None),
    abi("cuFuncGetAttribute", 2020, Some("cuFuncGetAttribute"), None),
    abi("cuFuncSetAttribute", 9000, Some("cuFuncSetAttribute"), None),
    abi("cuFuncSetCacheConfig", 3000, Some("cuFuncSetCacheConfig"), None),
    abi("cuOccupancyMaxActiveBlocksPerMultiprocessor", 6050, Some("cuOccupancyMaxActiveBlocksPerMultiprocessor"), None),
    abi("cuOccupancyMaxPotentialBlockSize", 6050, Some("cuOccupancyMaxPotentialBlockSize"), None),
    abi("cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags", 7000, Some("cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags"), None),
    abi("cuOccupancyAvailableDynamicSMemPerBlock", 10020, Some("cuOccupancyAvailableDynamicSMemPerBlock"), None),
    abi("cuOccupancyMaxPotentialClusterSize", 11070, Some("cuOccupancyMaxPotentialClusterSize"), None),
    abi("cuOccupancyMaxActiveClusters", 11070, Some("cuOccupancyMaxActiveClusters"), None),
    // launches
    abi("cuLaunchKernel", 4000, Some("cuLaunchKernel"), Some("cuLaunchKernel_ptsz")),
    abi("cuLaunchKernelEx", 11060, Some("cuLaunchKernelEx"), Some("cuLaunchKernelEx_ptsz")),
    abi("cuLaunchCooperativeKernel", 9000, Some("cuLaunchCooperativeKernel"), Some("cuLaunchCooperativeKernel_ptsz")),
    // graphs
    abi("cuGraphCreate", 10000, Some("cuGraphCreate"), None),
    abi("cuGraphDestroy", 10000, Some("cuGraphDestroy"), None),
    abi("cuGraphAddKernelNode", 10000, Some("cuGraphAddKernelNode"), None),
    abi("cuGraphAddKernelNode", 12000, Some("cuGraphAddKernelNode_v2"), None),
    abi("cuGraphAddMemcpyNode", 10000, Some("cuGraphAddMemcpyNode"), None),
    abi("cuGraphAddMemsetNode", 10000, Some("cuGraphAddMemsetNode"), None),
    abi("cuGraphAddEmptyNode", 10000, Some("cuGraphAddEmptyNode"), None),
    abi("cuGraphGetNodes", 10000, Some("cuGraphGetNodes"), None),
    abi("cuGraphGetRootNodes", 10000, Some("cuGraphGetRootNodes"), None),
    abi("cuGraphNodeGetType", 10000, Some("cuGraphNodeGetType"), None),
    abi("cuGraphKernelNodeGetParams", 10000, Some("cuGraphKernelNodeGetParams"), None),
    abi("cuGraphKernelNodeGetParams", 12000, Some("cuGraphKernelNodeGetParams_v2"), None),
    abi("cuGraphInstantiate", 10000, Some("cuGraphInstantiate"), None),
    abi("cuGraphInstantiate", 11000, Some("cuGraphInstantiate_v2"), None),
    abi("cuGraphInstantiateWithFlags", 11040, Some("cuGraphInstantiateWithFlags"), None),
    abi("cuGraphInstantiateWithParams", 12000, Some("cuGraphInstantiateWithParams"), Some("cuGraphInstantiateWithParams_ptsz")),
    abi("cuGraphUpload", 11010, Some("cuGraphUpload"), Some("cuGraphUpload_ptsz")),
    abi("cuGraphLaunch", 10000, Some("cuGraphLaunch"), Some("cuGraphLaunch_ptsz")),
    abi("cuGraphExecDestroy", 10000, Some("cuGraphExecDestroy"), None),
    abi("cuGraphKernelNodeSetParams", 10000, Some("cuGraphKernelNodeSetParams"), None),
    abi("cuGraphKernelNodeSetParams", 12000, Some("cuGraphKernelNodeSetParams_v2"), None),
    abi("cuGraphExecKernelNodeSetParams", 10010, Some("cuGraphExecKernelNodeSetParams"), None),
    abi("cuGraphExecKernelNodeSetParams", 12000, Some("cuGraphExecKernelNodeSetParams_v2"), None),
    abi("cuGraphExecUpdate", 10020, Some("cuGraphExecUpdate"), None),
    abi("cuGraphExecUpdate", 12000, Some("cuGraphExecUpdate_v2"), None),
    abi("cuGraphNodeGetDependencies", 10000, Some("cuGraphNodeGetDependencies"), None),
    abi("cuGraphNodeGetDependencies", 12030, Some("cuGraphNodeGetDependencies_v2"), None),
    abi("cuGraphNodeGetDependentNodes", 10000, Some("cuGraphNodeGetDependentNodes"), None),
    abi("cuGraphNodeGetDependentNodes", 12030, Some("cuGraphNodeGetDependentNodes_v2"), None),
    abi("cuUserObjectCreate", 11030, Some("cuUserObjectCreate"), None),
    abi("cuUserObjectRetain", 11030, Some("cuUserObjectRetain"), None),
    abi("cuUserObjectRelease", 11030, Some("cuUserObjectRelease"), None),
    abi("cuGraphRetainUserObject", 11030, Some("cuGraphRetainUserObject"), None),
    abi("cuGraphReleaseUserObject", 11030, Some("cuGraphReleaseUserObject"), None),
    abi("cuGraphAddHostNode", 10000, Some("cuGraphAddHostNode"), None),
    abi("cuGraphHostNodeGetParams", 10000, Some("cuGraphHostNodeGetParams"), None),
    abi("cuGraphHostNodeSetParams", 10000, Some("cuGraphHostNodeSetParams"), None),
    abi("cuGraphExecHostNodeSetParams", 10020, Some("cuGraphExecHostNodeSetParams"), None),
    abi("cuGraphAddMemAllocNode", 11040, Some("cuGraphAddMemAllocNode"), None),
    abi("cuGraphMemAllocNodeGetParams", 11040, Some("cuGraphMemAllocNodeGetParams"), None),
    abi("cuGraphAddMemFreeNode", 11040, Some("cuGraphAddMemFreeNode"), None),
    abi("cuGraphMemFreeNodeGetParams", 11040, Some("cuGraphMemFreeNodeGetParams"), None),
    abi("cuGraphAddNode", 12020, Some("cuGraphAddNode"), None),
    abi("cuGraphAddNode", 12030, Some("cuGraphAddNode_v2"), None),
    abi("cuGraphAddNode", 13040, None, None),
    abi("cuDeviceGraphMemTrim", 11040, Some("cuDeviceGraphMemTrim"), None),
    abi("cuDeviceGetGraphMemAttribute", 11040, Some("cuDeviceGetGraphMemAttribute"), None),
    abi("cuDeviceSetGraphMemAttribute", 11040, Some("cuDeviceSetGraphMemAttribute"), None),
    // JIT linking, tensor maps
    abi("cuLinkCreate", 5050, Some("cuLinkCreate"), None),
    abi("cuLinkCreate", 6050, Some("cuLinkCreate_v2"), None),
    abi("cuLinkAddData", 5050, Some("cuLinkAddData"), None),
    abi("cuLinkAddData", 6050, Some("cuLinkAddData_v2"), None),
    abi("cuLinkAddFile", 5050, Some("cuLinkAddFile"), None),
    abi("cuLinkAddFile", 6050, Some("cuLinkAddFile_v2"), None),
    abi("cuLinkComplete", 5050, Some("cuLinkComplete"), None),
    abi("cuLinkDestroy", 5050, Some("cuLinkDestroy"), None),
    abi("cuTensorMapEncodeTiled", 12000, Some("cuTensorMapEncodeTiled"), None),
    abi("cuTensorMapEncodeIm2col", 12000, Some("cuTensorMapEncodeIm2col"), None),
    abi("cuTensorMapReplaceAddress", 12000, Some("cuTensorMapReplaceAddress"), None),
    // stream memory operations, managed-memory hints
    abi("cuStreamWriteValue32", 8000, Some("cuStreamWriteValue32"), Some("cuStreamWriteValue32_ptsz")),
    abi("cuStreamWriteValue32", 11070, Some("cuStreamWriteValue32_v2"), Some("cuStreamWriteValue32_v2_ptsz")),
    abi("cuStreamWriteValue64", 9000, Some("cuStreamWriteValue64"), Some("cuStreamWriteValue64_ptsz")),
    abi("cuStreamWriteValue64", 11070, Some("cuStreamWriteValue64_v2"), Some("cuStreamWriteValue64_v2_ptsz")),
    abi("cuStreamWaitValue32", 8000, Some("cuStreamWaitValue32"), Some("cuStreamWaitValue32_ptsz")),
    abi("cuStreamWaitValue32", 11070, Some("cuStreamWaitValue32_v2"), Some("cuStreamWaitValue32_v2_ptsz")),
    abi("cuStreamWaitValue64", 9000, Some("cuStreamWaitValue64"), Some("cuStreamWaitValue64_ptsz")),
    abi("cuStreamWaitValue64", 11070, Some("cuStreamWaitValue64_v2"), Some("cuStreamWaitValue64_v2_ptsz")),
    abi("cuStreamBatchMemOp", 8000, Some("cuStreamBatchMemOp"), Some("cuStreamBatchMemOp_ptsz")),
    abi("cuStreamBatchMemOp", 11070, Some("cuStreamBatchMemOp_v2"), Some("cuStreamBatchMemOp_v2_ptsz")),
    abi("cuMemPrefetchAsync", 8000, Some("cuMemPrefetchAsync"), Some("cuMemPrefetchAsync_ptsz")),
    abi("cuMemPrefetchAsync", 12020, Some("cuMemPrefetchAsync_v2"), Some("cuMemPrefetchAsync_v2_ptsz")),
    abi("cuMemAdvise", 8000, Some("cuMemAdvise"), None),
    abi("cuMemAdvise", 12020, Some("cuMemAdvise_v2"), None),
    // sharing memory between processes
    abi("cuIpcGetMemHandle", 4010, Some("cuIpcGetMemHandle"), None),
    abi("cuIpcOpenMemHandle", 4010, Some("cuIpcOpenMemHandle"), None),
    abi("cuIpcOpenMemHandle", 11000, Some("cuIpcOpenMemHandle_v2"), None),
    abi("cuIpcCloseMemHandle", 4010, Some("cuIpcCloseMemHandle"), None),
    abi("cuIpcGetEventHandle", 4010, Some("cuIpcGetEventHandle"), None),
    abi("cuIpcOpenEventHandle", 4010, Some("cuIpcOpenEventHandle"), None),
    abi("cuMemPoolExportToShareableHandle", 11020, Some("cuMemPoolExportToShareableHandle"), None),
    abi("cuMemPoolImportFromShareableHandle", 11020, Some("cuMemPoolImportFromShareableHandle"), None),
    abi("cuMemPoolExportPointer", 11020, Some("cuMemPoolExportPointer"), None),
    abi("cuMemPoolImportPointer", 11020, Some("cuMemPoolImportPointer"), None),
    abi("cuMemExportToShareableHandle", 10020, Some("cuMemExportToShareableHandle"), None),
    abi("cuMemImportFromShareableHandle", 10020, Some("cuMemImportFromShareableHandle"), None),
];

/// `a == b`, usable in constant evaluation.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn opt_eq(a: Option<&str>, b: &str) -> bool {
    match a {
        Some(a) => str_eq(a, b),
        None => false,
    }
}

/// The row whose export (legacy or per-thread) is `name`, and whether
/// `name` is the per-thread one. Usable in constant evaluation, so a table
/// built from export names fails to compile when a name is missing here.
pub const fn by_export(name: &str) -> Option<(&'static Abi, bool)> {
    let mut i = 0;
    while i < ABIS.len() {
        let a = &ABIS[i];
        if opt_eq(a.export, name) {
            return Some((a, false));
        }
        if opt_eq(a.per_thread, name) {
            return Some((a, true));
        }
        i += 1;
    }
    None
}

/// As [`by_export`], failing constant evaluation (a compile error) when
/// `name` is not in the table.
pub const fn expect_export(name: &str) -> (&'static Abi, bool) {
    match by_export(name) {
        Some(r) => r,
        None => panic!("an export missing from cuda_abi::abi::ABIS"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// `PFN_<name>_v<version>[_ptsz|_ptds]` of the pinned toolkit's
    /// cudaTypedefs.h: each name's versions, and whether it has per-thread
    /// variants. The toolkit must be installed (scripts/setup-cuda-toolkit.sh):
    /// this test fails without it.
    fn typedefs() -> HashMap<String, (BTreeSet<i32>, bool)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let env = std::fs::read_to_string(root.join(".cuda/env"))
            .expect(".cuda/env is missing: run scripts/setup-cuda-toolkit.sh");
        let home = env
            .lines()
            .find_map(|l| l.strip_prefix("CUDA_HOME="))
            .expect("CUDA_HOME in .cuda/env");
        let inc = std::path::Path::new(home.trim()).join("include");
        let text = std::fs::read_to_string(inc.join("cudaTypedefs.h"))
            .expect("cudaTypedefs.h in the toolkit")
            + &std::fs::read_to_string(inc.join("cudaProfilerTypedefs.h"))
                .expect("cudaProfilerTypedefs.h in the toolkit");
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
    fn every_row_matches_the_abi_versions_in_cuda_typedefs() {
        let td = typedefs();
        let mut by_name: HashMap<&str, Vec<&Abi>> = HashMap::new();
        for a in ABIS {
            by_name.entry(a.base).or_default().push(a);
        }
        for (name, rows) in &by_name {
            let (versions, has_pt) = td
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is not in cudaTypedefs.h"));
            let mine: BTreeSet<i32> = rows.iter().map(|r| r.since).collect();
            assert_eq!(
                &mine, versions,
                "{name}: ABI versions differ from cudaTypedefs.h"
            );
            assert!(
                rows.windows(2).all(|w| w[0].since < w[1].since),
                "{name}: rows oldest first"
            );
            for r in rows.iter().filter(|r| r.export.is_some()) {
                assert_eq!(
                    r.per_thread.is_some(),
                    *has_pt,
                    "{name}@{}: per-thread variant",
                    r.since
                );
            }
        }
    }

    #[test]
    fn exports_are_unique_and_named_after_their_base() {
        let mut seen = BTreeSet::new();
        for a in ABIS {
            for e in [a.export, a.per_thread].into_iter().flatten() {
                assert!(seen.insert(e), "{e} appears twice");
                assert!(e.starts_with(a.base), "{e} is not an ABI of {}", a.base);
            }
            if let Some(pt) = a.per_thread {
                assert!(pt.ends_with("_ptsz") || pt.ends_with("_ptds"), "{pt}");
                assert!(a.export.is_some(), "{pt} without its legacy export");
            }
        }
        assert_eq!(
            by_export("cuMemAlloc_v2").map(|(a, pt)| (a.base, a.since, pt)),
            Some(("cuMemAlloc", 3020, false))
        );
        assert_eq!(
            by_export("cuLaunchKernel_ptsz").map(|(a, pt)| (a.base, a.since, pt)),
            Some(("cuLaunchKernel", 4000, true))
        );
        assert_eq!(
            by_export("cuMemAlloc").map(|(a, _)| a.since),
            Some(2000),
            "the legacy 32-bit ABI"
        );
        assert_eq!(by_export("cuNoSuchThing"), None);
    }
}
