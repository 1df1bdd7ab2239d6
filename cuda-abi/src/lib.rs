//! The part of the CUDA driver ABI that tslice touches, written by hand from
//! `cuda.h` (CUDA 13.x). Layouts are `#[repr(C)]` and checked by size tests
//! below; the integration tests also exercise them against real nvcc-built
//! programs, which use NVIDIA's header.
//!
//! No `unsafe` lives here: these are plain data types.
#![forbid(unsafe_code)]
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::c_void;
use std::fmt;

pub mod abi;
pub mod driver_types;

/// A driver result code. Kept as a `u32` newtype, never an enum: a newer
/// driver may return codes this crate does not know.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CUresult(pub u32);

impl CUresult {
    pub const SUCCESS: CUresult = CUresult(0);
    pub const ERROR_INVALID_VALUE: CUresult = CUresult(1);
    pub const ERROR_OUT_OF_MEMORY: CUresult = CUresult(2);
    pub const ERROR_NOT_INITIALIZED: CUresult = CUresult(3);
    pub const ERROR_DEINITIALIZED: CUresult = CUresult(4);
    pub const ERROR_NO_DEVICE: CUresult = CUresult(100);
    pub const ERROR_INVALID_DEVICE: CUresult = CUresult(101);
    pub const ERROR_INVALID_IMAGE: CUresult = CUresult(200);
    pub const ERROR_INVALID_CONTEXT: CUresult = CUresult(201);
    pub const ERROR_NOT_MAPPED: CUresult = CUresult(211);
    pub const ERROR_INVALID_SOURCE: CUresult = CUresult(300);
    pub const ERROR_FILE_NOT_FOUND: CUresult = CUresult(301);
    pub const ERROR_INVALID_HANDLE: CUresult = CUresult(400);
    pub const ERROR_ILLEGAL_STATE: CUresult = CUresult(401);
    pub const ERROR_NOT_FOUND: CUresult = CUresult(500);
    pub const ERROR_NOT_READY: CUresult = CUresult(600);
    pub const ERROR_PEER_ACCESS_ALREADY_ENABLED: CUresult = CUresult(704);
    pub const ERROR_PEER_ACCESS_NOT_ENABLED: CUresult = CUresult(705);
    pub const ERROR_LAUNCH_FAILED: CUresult = CUresult(719);
    pub const ERROR_NOT_PERMITTED: CUresult = CUresult(800);
    pub const ERROR_NOT_SUPPORTED: CUresult = CUresult(801);
    pub const ERROR_STREAM_CAPTURE_UNSUPPORTED: CUresult = CUresult(900);
    pub const ERROR_STREAM_CAPTURE_INVALIDATED: CUresult = CUresult(901);
    pub const ERROR_STREAM_CAPTURE_UNMATCHED: CUresult = CUresult(903);
    pub const ERROR_STREAM_CAPTURE_WRONG_THREAD: CUresult = CUresult(908);
    pub const ERROR_INVALID_CLUSTER_SIZE: CUresult = CUresult(912);
    pub const ERROR_UNKNOWN: CUresult = CUresult(999);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The driver's own name for the code (`CUDA_ERROR_OUT_OF_MEMORY`), or
    /// `None` for codes this crate does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "CUDA_SUCCESS",
            1 => "CUDA_ERROR_INVALID_VALUE",
            2 => "CUDA_ERROR_OUT_OF_MEMORY",
            3 => "CUDA_ERROR_NOT_INITIALIZED",
            4 => "CUDA_ERROR_DEINITIALIZED",
            100 => "CUDA_ERROR_NO_DEVICE",
            101 => "CUDA_ERROR_INVALID_DEVICE",
            200 => "CUDA_ERROR_INVALID_IMAGE",
            201 => "CUDA_ERROR_INVALID_CONTEXT",
            211 => "CUDA_ERROR_NOT_MAPPED",
            300 => "CUDA_ERROR_INVALID_SOURCE",
            301 => "CUDA_ERROR_FILE_NOT_FOUND",
            400 => "CUDA_ERROR_INVALID_HANDLE",
            401 => "CUDA_ERROR_ILLEGAL_STATE",
            500 => "CUDA_ERROR_NOT_FOUND",
            600 => "CUDA_ERROR_NOT_READY",
            719 => "CUDA_ERROR_LAUNCH_FAILED",
            800 => "CUDA_ERROR_NOT_PERMITTED",
            801 => "CUDA_ERROR_NOT_SUPPORTED",
            900 => "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
            901 => "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
            903 => "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
            908 => "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
            999 => "CUDA_ERROR_UNKNOWN",
            _ => return None,
        })
    }
}

impl fmt::Debug for CUresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "CUresult({})", self.0),
        }
    }
}

impl fmt::Display for CUresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Opaque handle types. The driver owns what they point to.
macro_rules! opaque_handles {
    ($($name:ident),* $(,)?) => {$(
        pub type $name = *mut c_void;
    )*};
}
opaque_handles!(
    CUcontext,
    CUmodule,
    CUlibrary,
    CUfunction,
    CUkernel,
    CUstream,
    CUevent,
    CUarray,
    CUmipmappedArray,
    CUmemoryPool,
    CUgraph,
    CUgraphExec,
    CUgraphNode,
);

pub type CUdevice = i32;
pub type CUdeviceptr = u64;
pub type CUdeviceptr_v1 = u32;
pub type CUmemGenericAllocationHandle = u64;
pub type cuuint64_t = u64;

/// `CU_STREAM_LEGACY`: the legacy default stream, usable from any stream-taking call.
pub const CU_STREAM_LEGACY: CUstream = 0x1 as CUstream;
/// `CU_STREAM_PER_THREAD`: the calling thread's per-thread default stream.
pub const CU_STREAM_PER_THREAD: CUstream = 0x2 as CUstream;

/// `cuGetProcAddress` flags.
pub const CU_GET_PROC_ADDRESS_DEFAULT: u64 = 0;
pub const CU_GET_PROC_ADDRESS_LEGACY_STREAM: u64 = 1;
pub const CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM: u64 = 2;

/// `CUdriverProcAddressQueryResult`.
pub type CUdriverProcAddressQueryResult = u32;
pub const CU_GET_PROC_ADDRESS_SUCCESS: u32 = 0;
pub const CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND: u32 = 1;
pub const CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT: u32 = 2;

/// Event creation flags.
pub const CU_EVENT_DEFAULT: u32 = 0;
pub const CU_EVENT_BLOCKING_SYNC: u32 = 1;
pub const CU_EVENT_DISABLE_TIMING: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CUuuid {
    pub bytes: [u8; 16],
}

impl CUuuid {
    /// The form `nvidia-smi -L` prints: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn to_gpu_string(&self) -> String {
        let b = &self.bytes;
        let mut s = String::with_capacity(40);
        s.push_str("GPU-");
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push_str(&format!("{x:02x}"));
        }
        s
    }
}

/// `CUDA_ARRAY_DESCRIPTOR_v2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUDA_ARRAY_DESCRIPTOR {
    pub Width: usize,
    pub Height: usize,
    pub Format: u32,
    pub NumChannels: u32,
}

/// `CUDA_ARRAY3D_DESCRIPTOR_v2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUDA_ARRAY3D_DESCRIPTOR {
    pub Width: usize,
    pub Height: usize,
    pub Depth: usize,
    pub Format: u32,
    pub NumChannels: u32,
    pub Flags: u32,
}

/// `CUmemLocation_v1` (the union is read as its `id` member).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUmemLocation {
    pub type_: u32,
    pub id: i32,
}
pub const CU_MEM_LOCATION_TYPE_DEVICE: u32 = 1;

/// `CUmemAllocationProp_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUmemAllocationProp {
    pub type_: u32,
    pub requestedHandleTypes: u32,
    pub location: CUmemLocation,
    pub win32HandleMetaData: *mut c_void,
    pub allocFlags: CUmemAllocFlags,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CUmemAllocFlags {
    pub compressionType: u8,
    pub gpuDirectRDMACapable: u8,
    pub usage: u16,
    pub reserved: [u8; 4],
}

/// `CUlaunchAttribute`: an id, padding to 8 bytes, and a 64-byte value union.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUlaunchAttribute {
    pub id: u32,
    pub pad: [u8; 4],
    pub value: [u8; 64],
}
pub const CU_LAUNCH_ATTRIBUTE_COOPERATIVE: u32 = 2;
/// Its value: three `u32`, the cluster's dimensions in blocks.
pub const CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;

/// `CUlaunchConfig`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUlaunchConfig {
    pub gridDimX: u32,
    pub gridDimY: u32,
    pub gridDimZ: u32,
    pub blockDimX: u32,
    pub blockDimY: u32,
    pub blockDimZ: u32,
    pub sharedMemBytes: u32,
    pub hStream: CUstream,
    pub attrs: *mut CUlaunchAttribute,
    pub numAttrs: u32,
}

/// `CUarray_format` values whose element size is known; others are sized
/// conservatively by [`array_format_bytes`].
pub mod array_format {
    pub const UNSIGNED_INT8: u32 = 0x01;
    pub const UNSIGNED_INT16: u32 = 0x02;
    pub const UNSIGNED_INT32: u32 = 0x03;
    pub const SIGNED_INT8: u32 = 0x08;
    pub const SIGNED_INT16: u32 = 0x09;
    pub const SIGNED_INT32: u32 = 0x0a;
    pub const HALF: u32 = 0x10;
    pub const FLOAT: u32 = 0x20;
}

/// Bytes per channel of an array format. Formats whose size this crate does
/// not model (packed, planar, block-compressed) are charged 4 bytes per
/// channel, which is at least their real size (the largest of them packs
/// 64 bits into four channels).
pub fn array_format_bytes(format: u32) -> u64 {
    use array_format::*;
    match format {
        UNSIGNED_INT8 | SIGNED_INT8 => 1,
        UNSIGNED_INT16 | SIGNED_INT16 | HALF => 2,
        UNSIGNED_INT32 | SIGNED_INT32 | FLOAT => 4,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    #[test]
    fn layouts_match_cuda_h() {
        assert_eq!(size_of::<CUresult>(), 4);
        assert_eq!(size_of::<CUuuid>(), 16);
        assert_eq!(size_of::<CUDA_ARRAY_DESCRIPTOR>(), 24);
        assert_eq!(size_of::<CUDA_ARRAY3D_DESCRIPTOR>(), 40);
        assert_eq!(size_of::<CUmemLocation>(), 8);
        assert_eq!(size_of::<CUmemAllocationProp>(), 32);
        assert_eq!(size_of::<CUlaunchAttribute>(), 72);
        assert_eq!(size_of::<CUlaunchConfig>(), 56);
        assert_eq!(align_of::<CUlaunchConfig>(), 8);
    }

    #[test]
    fn result_names() {
        assert_eq!(
            CUresult::ERROR_OUT_OF_MEMORY.name(),
            Some("CUDA_ERROR_OUT_OF_MEMORY")
        );
        assert_eq!(CUresult(12345).name(), None);
        assert_eq!(format!("{:?}", CUresult(12345)), "CUresult(12345)");
        assert_eq!(format!("{}", CUresult(2)), "CUDA_ERROR_OUT_OF_MEMORY(2)");
    }

    #[test]
    fn uuid_string() {
        let u = CUuuid { bytes: [0xab; 16] };
        assert_eq!(
            u.to_gpu_string(),
            "GPU-abababab-abab-abab-abab-abababababab"
        );
    }
}
