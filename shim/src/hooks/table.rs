// THE TABLE OF HOOKED ENTRY POINTS (the CUDA driver's, then NVML's): the
// single source of truth.
//
// It is expanded by `hook_table!` in `hooks/mod.rs` into: the exported wrappers
// (under these exact names), the originals resolved from the real driver, the
// `dlsym` routing, and the `cuGetProcAddress` routing. `shim/tests/exports.rs`
// expands it with another macro to check `nm -D` of the built library.
//
// Each row: exported name (the driver's own versioned export), the C
// signature and the implementing function. The base name `cuGetProcAddress`
// knows it by, the CUDA version that introduced the ABI and its stream
// variant come from `cuda_abi::abi::ABIS` (checked against cudaTypedefs.h);
// a name missing there does not compile.
//
// Legacy ABIs (e.g. the 32-bit `cuMemAlloc` of version 2000) are deliberately
// absent: lookups of them pass through to the driver untouched.
hook_table! {
    // Initialisation and entry-point lookup.
    cuInit
        fn(flags: c_uint) = crate::init::cu_init;
    cuGetProcAddress
        fn(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64)
        = crate::procaddr::get_proc_address;
    cuGetProcAddress_v2
        fn(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64,
           status: *mut CUdriverProcAddressQueryResult)
        = crate::procaddr::get_proc_address_v2;

    // Context life cycle: destroying a context frees its memory and events.
    cuDevicePrimaryCtxRetain
        fn(ctx: *mut CUcontext, dev: CUdevice) = crate::context::primary_retain;
    cuDevicePrimaryCtxRelease
        fn(dev: CUdevice) = crate::context::primary_release_v1;
    cuDevicePrimaryCtxRelease_v2
        fn(dev: CUdevice) = crate::context::primary_release;
    cuDevicePrimaryCtxReset
        fn(dev: CUdevice) = crate::context::primary_reset_v1;
    cuDevicePrimaryCtxReset_v2
        fn(dev: CUdevice) = crate::context::primary_reset;
    cuCtxDestroy_v2
        fn(ctx: CUcontext) = crate::context::destroy;

    // What the tenant is told about memory.
    cuMemGetInfo_v2
        fn(free: *mut usize, total: *mut usize) = crate::mem::mem_get_info;
    cuDeviceTotalMem_v2
        fn(bytes: *mut usize, dev: CUdevice) = crate::mem::device_total_mem;

    // Allocation paths.
    cuMemAlloc_v2
        fn(dptr: *mut CUdeviceptr, bytesize: usize) = crate::mem::mem_alloc;
    cuMemAllocPitch_v2
        fn(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, elem: c_uint)
        = crate::mem::mem_alloc_pitch;
    cuMemAllocManaged
        fn(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) = crate::mem::mem_alloc_managed;
    cuMemAllocAsync
        fn(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) = crate::mem::mem_alloc_async;
    cuMemAllocAsync_ptsz
        fn(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) = crate::mem::mem_alloc_async_ptsz;
    cuMemAllocFromPoolAsync
        fn(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream)
        = crate::mem::mem_alloc_from_pool_async;
    cuMemAllocFromPoolAsync_ptsz
        fn(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream)
        = crate::mem::mem_alloc_from_pool_async_ptsz;
    cuMemCreate
        fn(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp,
           flags: u64) = crate::mem::mem_create;
    cuArrayCreate_v2
        fn(array: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) = crate::mem::array_create;
    cuArray3DCreate_v2
        fn(array: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) = crate::mem::array3d_create;
    cuMipmappedArrayCreate
        fn(array: *mut CUmipmappedArray, desc: *const CUDA_ARRAY3D_DESCRIPTOR, levels: c_uint)
        = crate::mem::mipmapped_array_create;

    // Where memory pools live: stream-ordered allocations from a pool are
    // charged to the pool's device, whatever stream orders them.
    cuMemPoolCreate
        fn(pool: *mut CUmemoryPool, props: *const cuda_abi::driver_types::CUmemPoolProps)
        = crate::mem::mem_pool_create;
    cuDeviceGetDefaultMemPool
        fn(pool: *mut CUmemoryPool, dev: CUdevice) = crate::mem::device_get_default_mem_pool;
    cuDeviceGetMemPool
        fn(pool: *mut CUmemoryPool, dev: CUdevice) = crate::mem::device_get_mem_pool;
    cuMemGetDefaultMemPool
        fn(pool: *mut CUmemoryPool, location: *mut CUmemLocation, ty: c_uint)
        = crate::mem::mem_get_default_mem_pool;
    cuMemGetMemPool
        fn(pool: *mut CUmemoryPool, location: *mut CUmemLocation, ty: c_uint)
        = crate::mem::mem_get_mem_pool;
    cuMemPoolDestroy
        fn(pool: CUmemoryPool) = crate::mem::mem_pool_destroy;

    // Release paths (and the VMM mappings that keep released handles alive).
    cuMemFree_v2
        fn(dptr: CUdeviceptr) = crate::mem::mem_free;
    cuMemFreeAsync
        fn(dptr: CUdeviceptr, stream: CUstream) = crate::mem::mem_free_async;
    cuMemFreeAsync_ptsz
        fn(dptr: CUdeviceptr, stream: CUstream) = crate::mem::mem_free_async_ptsz;
    cuMemRelease
        fn(handle: CUmemGenericAllocationHandle) = crate::mem::mem_release;
    cuMemRetainAllocationHandle
        fn(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void)
        = crate::mem::mem_retain_allocation_handle;
    cuMemMap
        fn(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle,
           flags: u64) = crate::mem::mem_map;
    cuMemUnmap
        fn(ptr: CUdeviceptr, size: usize) = crate::mem::mem_unmap;
    cuArrayDestroy
        fn(array: CUarray) = crate::mem::array_destroy;
    cuMipmappedArrayDestroy
        fn(array: CUmipmappedArray) = crate::mem::mipmapped_array_destroy;

    // Stream capture: launches into a capturing stream are not launches. The
    // shim counts the captures in progress so that, while there are none,
    // the launch path need not ask the driver.
    cuStreamBeginCapture
        fn(stream: CUstream) = crate::capture::begin_v1;
    cuStreamBeginCapture_ptsz
        fn(stream: CUstream) = crate::capture::begin_v1_ptsz;
    cuStreamBeginCapture_v2
        fn(stream: CUstream, mode: c_uint) = crate::capture::begin;
    cuStreamBeginCapture_v2_ptsz
        fn(stream: CUstream, mode: c_uint) = crate::capture::begin_ptsz;
    cuStreamBeginCaptureToGraph
        fn(stream: CUstream, graph: CUgraph, deps: *const CUgraphNode, edges: *const c_void, n: usize,
           mode: c_uint) = crate::capture::begin_to_graph;
    cuStreamBeginCaptureToGraph_ptsz
        fn(stream: CUstream, graph: CUgraph, deps: *const CUgraphNode, edges: *const c_void, n: usize,
           mode: c_uint) = crate::capture::begin_to_graph_ptsz;
    cuStreamBeginRecaptureToGraph
        fn(stream: CUstream, mode: c_uint, graph: CUgraph, callback: *mut c_void, data: *mut c_void)
        = crate::capture::begin_recapture;
    cuStreamBeginRecaptureToGraph_ptsz
        fn(stream: CUstream, mode: c_uint, graph: CUgraph, callback: *mut c_void, data: *mut c_void)
        = crate::capture::begin_recapture_ptsz;
    cuStreamBeginCaptureToCig
        fn(stream: CUstream, params: *mut c_void) = crate::capture::begin_to_cig;
    cuStreamBeginCaptureToCig_ptsz
        fn(stream: CUstream, params: *mut c_void) = crate::capture::begin_to_cig_ptsz;
    cuStreamEndCapture
        fn(stream: CUstream, graph: *mut CUgraph) = crate::capture::end;
    cuStreamEndCapture_ptsz
        fn(stream: CUstream, graph: *mut CUgraph) = crate::capture::end_ptsz;
    cuStreamEndCaptureToCig
        fn(stream: CUstream) = crate::capture::end_to_cig;
    cuStreamEndCaptureToCig_ptsz
        fn(stream: CUstream) = crate::capture::end_to_cig_ptsz;

    // Launch paths.
    cuLaunchKernel
        fn(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
           shmem: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void)
        = crate::launch::launch_kernel;
    cuLaunchKernel_ptsz
        fn(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
           shmem: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void)
        = crate::launch::launch_kernel_ptsz;
    cuLaunchKernelEx
        fn(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void,
           extra: *mut *mut c_void) = crate::launch::launch_kernel_ex;
    cuLaunchKernelEx_ptsz
        fn(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void,
           extra: *mut *mut c_void) = crate::launch::launch_kernel_ex_ptsz;
    cuLaunchCooperativeKernel
        fn(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
           shmem: c_uint, stream: CUstream, params: *mut *mut c_void)
        = crate::launch::launch_cooperative;
    cuLaunchCooperativeKernel_ptsz
        fn(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
           shmem: c_uint, stream: CUstream, params: *mut *mut c_void)
        = crate::launch::launch_cooperative_ptsz;
    // Graph memory: charged while the driver backs an executable's
    // memory-allocation nodes (graphmem.rs).
    cuGraphInstantiateWithFlags
        fn(exec: *mut CUgraphExec, graph: CUgraph, flags: u64) = crate::graphmem::instantiate_with_flags;
    cuGraphInstantiate
        fn(exec: *mut CUgraphExec, graph: CUgraph, err: *mut CUgraphNode, log: *mut c_char, len: usize)
        = crate::graphmem::instantiate_v1;
    cuGraphInstantiate_v2
        fn(exec: *mut CUgraphExec, graph: CUgraph, err: *mut CUgraphNode, log: *mut c_char, len: usize)
        = crate::graphmem::instantiate_v2;
    cuGraphInstantiateWithParams
        fn(exec: *mut CUgraphExec, graph: CUgraph,
           params: *mut cuda_abi::driver_types::CUDA_GRAPH_INSTANTIATE_PARAMS)
        = crate::graphmem::instantiate_with_params;
    cuGraphInstantiateWithParams_ptsz
        fn(exec: *mut CUgraphExec, graph: CUgraph,
           params: *mut cuda_abi::driver_types::CUDA_GRAPH_INSTANTIATE_PARAMS)
        = crate::graphmem::instantiate_with_params_ptsz;
    cuGraphUpload
        fn(exec: CUgraphExec, stream: CUstream) = crate::graphmem::upload;
    cuGraphUpload_ptsz
        fn(exec: CUgraphExec, stream: CUstream) = crate::graphmem::upload_ptsz;
    cuGraphExecDestroy
        fn(exec: CUgraphExec) = crate::graphmem::exec_destroy;
    cuDeviceGraphMemTrim
        fn(dev: CUdevice) = crate::graphmem::mem_trim;

    cuGraphLaunch
        fn(exec: CUgraphExec, stream: CUstream) = crate::launch::graph_launch;
    cuGraphLaunch_ptsz
        fn(exec: CUgraphExec, stream: CUstream) = crate::launch::graph_launch_ptsz;
}

// NVML's entry points: what a tenant is told about the GPU's memory and who
// uses it, consistently with the driver API above. Expanded by
// `nvml_table!` into the exported wrappers, their originals (resolved from
// `libnvidia-ml.so.1`) and the `dlsym` routing.
nvml_table! {
    nvmlDeviceGetMemoryInfo
        fn(device: NvmlDevice, memory: *mut crate::nvml::Memory) = crate::nvml::memory_info;
    nvmlDeviceGetMemoryInfo_v2
        fn(device: NvmlDevice, memory: *mut crate::nvml::MemoryV2) = crate::nvml::memory_info_v2;
    nvmlDeviceGetComputeRunningProcesses
        fn(device: NvmlDevice, count: *mut c_uint, infos: *mut crate::nvml::ProcessV1)
        = crate::nvml::processes_v1;
    nvmlDeviceGetComputeRunningProcesses_v2
        fn(device: NvmlDevice, count: *mut c_uint, infos: *mut crate::nvml::ProcessV2)
        = crate::nvml::processes_v2;
    nvmlDeviceGetComputeRunningProcesses_v3
        fn(device: NvmlDevice, count: *mut c_uint, infos: *mut crate::nvml::ProcessV2)
        = crate::nvml::processes_v3;
}
