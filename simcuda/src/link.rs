//! The JIT linker (`cuLinkCreate` .. `cuLinkComplete`): what cuBLASLt and
//! NVRTC-based code (CuPy) use to combine images at run time. Nothing is
//! compiled: the inputs (cubins, PTX, fatbins) are packed, as they are, into
//! one fatbin container that `cuModuleLoadData` reads like any other, so
//! the linked module defines every kernel its inputs defined.

use crate::entry::{cstr, out, out_opt, Res, INVALID_HANDLE, INVALID_VALUE};
use crate::process::{self, handle_of, Handle, Magic};
use cuda_abi::CUresult;
use std::ffi::{c_char, c_void};
use std::sync::Mutex;

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const ENTRY_HEADER: usize = 64;
/// `CUjitInputType`.
const INPUT_CUBIN: u32 = 0;
const INPUT_PTX: u32 = 1;
const INPUT_FATBINARY: u32 = 2;
const INPUT_OBJECT: u32 = 3;
const INPUT_LIBRARY: u32 = 4;
const INPUT_NVVM: u32 = 5;
/// Fatbin entry kinds.
const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;

pub struct LinkState {
    magic: Magic,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Fatbin entries (header + payload), in the order added.
    entries: Vec<u8>,
    /// The completed image; lives until `cuLinkDestroy`, as CUDA's does.
    output: Option<Vec<u8>>,
}

impl Handle for LinkState {
    const MAGIC: u32 = 0x11CC_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

fn entry(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; ENTRY_HEADER];
    e[0..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
    e[4..8].copy_from_slice(&(ENTRY_HEADER as u32).to_le_bytes());
    e[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    e[56..64].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    e.extend_from_slice(payload);
    e
}

/// The entries of a fatbin container (its body), or None when `b` is not one.
fn fatbin_body(b: &[u8]) -> Option<&[u8]> {
    if b.len() < 16 || u32::from_le_bytes(b[0..4].try_into().ok()?) != FATBIN_MAGIC {
        return None;
    }
    let hsize = u16::from_le_bytes(b[6..8].try_into().ok()?) as usize;
    let body = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
    b.get(hsize..hsize.checked_add(body)?)
}

/// The entries one input contributes.
fn entries_of(ty: u32, data: &[u8]) -> Res<Vec<u8>> {
    match ty {
        INPUT_CUBIN if data.starts_with(b"\x7fELF") => Ok(entry(KIND_ELF, data)),
        INPUT_PTX | INPUT_NVVM if !data.is_empty() => Ok(entry(KIND_PTX, data)),
        INPUT_FATBINARY => fatbin_body(data)
            .map(<[u8]>::to_vec)
            .ok_or(CUresult::ERROR_INVALID_IMAGE),
        // Host objects and archives carry their device code in sections
        // this driver does not read; they add nothing it could load.
        INPUT_OBJECT | INPUT_LIBRARY => Ok(Vec::new()),
        INPUT_CUBIN | INPUT_PTX | INPUT_NVVM => Err(CUresult::ERROR_INVALID_IMAGE),
        _ => Err(INVALID_VALUE),
    }
}

fn create(state: *mut *mut c_void) -> Res {
    let p = process::initialized()?;
    crate::context::current()?;
    if state.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = p.links.insert(LinkState {
        magic: Magic::new(LinkState::MAGIC),
        inner: Mutex::new(Inner::default()),
    });
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(state, handle_of(&s)) }
}

fn add(state: *mut c_void, ty: u32, data: &[u8]) -> Res {
    let s = process::initialized()?.links.get(state)?;
    let e = entries_of(ty, data)?;
    let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    if g.output.is_some() {
        return Err(INVALID_HANDLE);
    }
    g.entries.extend_from_slice(&e);
    Ok(())
}

export! {
    /// JIT options are accepted and ignored (there is nothing to compile);
    /// output options such as the info/error log buffers are left as given.
    fn cuLinkCreate_v2(n: u32, opts: *mut c_void, vals: *mut *mut c_void, state: *mut *mut c_void) {
        let _ = (n, opts, vals);
        create(state)
    }
}

export! {
    fn cuLinkCreate(n: u32, opts: *mut c_void, vals: *mut *mut c_void, state: *mut *mut c_void) {
        let _ = (n, opts, vals);
        create(state)
    }
}

fn add_data(state: *mut c_void, ty: u32, data: *mut c_void, size: usize) -> Res {
    if data.is_null() || size == 0 {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller's image of `size` bytes.
    let d = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    add(state, ty, d)
}

fn add_file(state: *mut c_void, ty: u32, path: *const c_char) -> Res {
    // SAFETY: the caller's NUL-terminated path.
    let path = unsafe { cstr(path)? };
    let d = std::fs::read(path).map_err(|_| CUresult::ERROR_FILE_NOT_FOUND)?;
    add(state, ty, &d)
}

export! {
    fn cuLinkAddData_v2(state: *mut c_void, ty: u32, data: *mut c_void, size: usize, name: *const c_char, n: u32, opts: *mut c_void, vals: *mut *mut c_void) {
        let _ = (name, n, opts, vals);
        add_data(state, ty, data, size)
    }
}

export! {
    fn cuLinkAddData(state: *mut c_void, ty: u32, data: *mut c_void, size: usize, name: *const c_char, n: u32, opts: *mut c_void, vals: *mut *mut c_void) {
        let _ = (name, n, opts, vals);
        add_data(state, ty, data, size)
    }
}

export! {
    fn cuLinkAddFile_v2(state: *mut c_void, ty: u32, path: *const c_char, n: u32, opts: *mut c_void, vals: *mut *mut c_void) {
        let _ = (n, opts, vals);
        add_file(state, ty, path)
    }
}

export! {
    fn cuLinkAddFile(state: *mut c_void, ty: u32, path: *const c_char, n: u32, opts: *mut c_void, vals: *mut *mut c_void) {
        let _ = (n, opts, vals);
        add_file(state, ty, path)
    }
}

export! {
    /// The linked image: a fatbin container of every input's entries, owned
    /// by the link state.
    fn cuLinkComplete(state: *mut c_void, cubin: *mut *mut c_void, size: *mut usize) {
        let s = process::initialized()?.links.get(state)?;
        if cubin.is_null() {
            return Err(INVALID_VALUE);
        }
        let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.entries.is_empty() {
            return Err(INVALID_VALUE);
        }
        if g.output.is_none() {
            let mut img = Vec::with_capacity(16 + g.entries.len());
            img.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
            img.extend_from_slice(&1u16.to_le_bytes());
            img.extend_from_slice(&16u16.to_le_bytes());
            img.extend_from_slice(&(g.entries.len() as u64).to_le_bytes());
            img.extend_from_slice(&g.entries);
            g.output = Some(img);
        }
        let img = g.output.as_ref().expect("set above");
        // SAFETY: the caller's output pointers (cubin checked non-NULL, size optional).
        unsafe {
            out_opt(size, img.len());
            out(cubin, img.as_ptr() as *mut c_void)
        }
    }
}

export! {
    fn cuLinkDestroy(state: *mut c_void) {
        process::initialized()?.links.remove(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_become_fatbin_entries_the_module_reader_accepts() {
        assert_eq!(
            entries_of(INPUT_PTX, b".version 8.0").unwrap().len(),
            64 + 12
        );
        assert!(entries_of(INPUT_CUBIN, b"not an elf").is_err());
        assert!(entries_of(INPUT_FATBINARY, b"short").is_err());
        assert!(entries_of(99, b"x").is_err());
        assert!(entries_of(INPUT_OBJECT, b"x").unwrap().is_empty());
        let e = entry(KIND_PTX, b"abc");
        let mut fb = FATBIN_MAGIC.to_le_bytes().to_vec();
        fb.extend_from_slice(&1u16.to_le_bytes());
        fb.extend_from_slice(&16u16.to_le_bytes());
        fb.extend_from_slice(&(e.len() as u64).to_le_bytes());
        fb.extend_from_slice(&e);
        assert_eq!(entries_of(INPUT_FATBINARY, &fb).unwrap(), e);
    }
}
