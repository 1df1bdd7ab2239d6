//! Texture objects: the descriptors a program creates are kept and handed
//! back (kernels do not run on the simulated device, so nothing samples
//! them). Layouts are the driver's: `CUDA_RESOURCE_DESC` 144 bytes,
//! `CUDA_TEXTURE_DESC` 104, `CUDA_RESOURCE_VIEW_DESC` 112.

use crate::entry::{out, INVALID_VALUE};
use crate::process;
use std::collections::HashMap;
use std::sync::Mutex;

pub type ResourceDesc = [u8; 144];
pub type TextureDesc = [u8; 104];
pub type ViewDesc = [u8; 112];

/// One texture object's descriptors.
pub struct TexObj {
    res: ResourceDesc,
    tex: TextureDesc,
    view: Option<ViewDesc>,
}

/// The process's texture objects, by handle.
#[derive(Default)]
pub struct Textures(Mutex<HashMap<u64, TexObj>>);

impl Textures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TexObj>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

export! {
    fn cuTexObjectCreate(obj: *mut u64, res: *const ResourceDesc, tex: *const TextureDesc, view: *const ViewDesc) {
        let p = process::initialized()?;
        crate::context::current()?;
        // SAFETY: the caller's descriptors, when given (NULL view: none).
        let (res, tex, view) = unsafe { (res.as_ref(), tex.as_ref(), view.as_ref()) };
        let (Some(res), Some(tex)) = (res, tex) else {
            return Err(INVALID_VALUE);
        };
        // CU_RESOURCE_TYPE_ARRAY, MIPMAPPED_ARRAY, LINEAR, PITCH2D.
        let kind = u32::from_le_bytes([res[0], res[1], res[2], res[3]]);
        if kind > 3 {
            return Err(INVALID_VALUE);
        }
        let id = p.next_id();
        p.textures.lock().insert(id, TexObj { res: *res, tex: *tex, view: view.copied() });
        // SAFETY: caller's output pointer.
        unsafe { out(obj, id) }
    }
}

export! {
    fn cuTexObjectDestroy(obj: u64) {
        let p = process::initialized()?;
        p.textures.lock().remove(&obj).map(|_| ()).ok_or(INVALID_VALUE)
    }
}

export! {
    fn cuTexObjectGetResourceDesc(res: *mut ResourceDesc, obj: u64) {
        let p = process::initialized()?;
        let v = p.textures.lock().get(&obj).map(|t| t.res).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(res, v) }
    }
}

export! {
    fn cuTexObjectGetTextureDesc(tex: *mut TextureDesc, obj: u64) {
        let p = process::initialized()?;
        let v = p.textures.lock().get(&obj).map(|t| t.tex).ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(tex, v) }
    }
}

export! {
    fn cuTexObjectGetResourceViewDesc(view: *mut ViewDesc, obj: u64) {
        let p = process::initialized()?;
        let v = p.textures.lock().get(&obj).ok_or(INVALID_VALUE)?.view.ok_or(INVALID_VALUE)?;
        // SAFETY: caller's output pointer.
        unsafe { out(view, v) }
    }
}
