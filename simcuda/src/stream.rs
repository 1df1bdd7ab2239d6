//! Streams: created, legacy default and per-thread default streams, queries,
//! synchronization, cross-stream waits, host functions.
//!
//! A stream records the sequence number of the last item it submitted to
//! its context's simgpu queue. Because a context's queue is FIFO, "the last
//! item of the stream has completed" implies everything before it has.

use crate::capture::StreamCapture;
use crate::context::{self, Ctx, HostJob};
use crate::entry::{out, out_opt, Res, INVALID_HANDLE, INVALID_VALUE};
use crate::process::{self, handle_of, Handle, Magic};
use cuda_abi::{CUcontext, CUdevice, CUresult, CUstream, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Which stream the NULL handle means for the calling entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultStream {
    Legacy,
    PerThread,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Created,
    Legacy,
    PerThread,
}

/// Numerically lowest (= highest) stream priority, as on H100.
pub const GREATEST_PRIORITY: i32 = -5;

pub struct Stream {
    magic: Magic,
    pub id: u64,
    pub ctx: Arc<Ctx>,
    pub flags: u32,
    pub priority: i32,
    pub kind: Kind,
    last: AtomicU64,
    host: Mutex<(u64, u64)>,
    host_cv: Condvar,
    capture: Mutex<Option<StreamCapture>>,
    /// Attributes set with `cuStreamSetAttribute` (id → the 64-byte value).
    attrs: Mutex<HashMap<u32, [u8; 64]>>,
}

impl Handle for Stream {
    const MAGIC: u32 = 0x5757_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl Stream {
    fn build(ctx: Arc<Ctx>, flags: u32, priority: i32, kind: Kind) -> Stream {
        Stream {
            magic: Magic::new(Self::MAGIC),
            id: process::get().next_id(),
            ctx,
            flags,
            priority,
            kind,
            last: AtomicU64::new(0),
            host: Mutex::new((0, 0)),
            host_cv: Condvar::new(),
            capture: Mutex::new(None),
            attrs: Mutex::new(HashMap::new()),
        }
    }

    pub fn new_default(ctx: Arc<Ctx>, kind: Kind) -> Stream {
        Stream::build(ctx, 0, 0, kind)
    }

    /// Submits work in stream order; returns its sequence number.
    pub fn submit(&self, work: simgpu::Work) -> Res<simgpu::Seq> {
        let seq = self.ctx.sim()?.try_submit(work).map_err(context::sim_err)?;
        self.note(seq);
        Ok(seq)
    }

    /// Records that `seq` (already submitted to the context) belongs to this stream.
    pub fn note(&self, seq: simgpu::Seq) {
        self.last.fetch_max(seq, Ordering::AcqRel);
    }

    pub fn last(&self) -> simgpu::Seq {
        self.last.load(Ordering::Acquire)
    }

    pub fn synchronize(&self) -> Res {
        self.refuse_while_capturing()?;
        let last = self.last();
        if last > 0 {
            self.ctx.sim()?.try_wait(last).map_err(context::sim_err)?;
        }
        self.wait_host_functions();
        Ok(())
    }

    pub fn query(&self) -> Res {
        self.refuse_while_capturing()?;
        let last = self.last();
        if last > 0
            && !self
                .ctx
                .sim()?
                .try_is_complete(last)
                .map_err(context::sim_err)?
        {
            return Err(CUresult::ERROR_NOT_READY);
        }
        let h = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if h.1 < h.0 {
            return Err(CUresult::ERROR_NOT_READY);
        }
        Ok(())
    }

    pub fn wait_host_functions(&self) {
        let mut h = self.host.lock().unwrap_or_else(|e| e.into_inner());
        let target = h.0;
        while h.1 < target {
            h = self.host_cv.wait(h).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn host_function_done(&self) {
        self.host.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
        self.host_cv.notify_all();
    }

    /// Runs `call` on the context's host thread after all work submitted so far.
    pub fn launch_host(self: &Arc<Self>, call: Box<dyn FnOnce() + Send>) -> Res {
        if self.capturing() {
            crate::capture::invalidate(self);
            return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let seq = self.ctx.sim()?.last_submitted();
        self.host.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        let r = self.ctx.queue_host(HostJob {
            stream: self.clone(),
            seq,
            call,
        });
        if r.is_err() {
            self.host_function_done();
        }
        r
    }

    pub fn capture(&self) -> MutexGuard<'_, Option<StreamCapture>> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capturing(&self) -> bool {
        self.capture().is_some()
    }

    /// Synchronous use of a capturing stream is illegal and invalidates the capture.
    pub fn refuse_while_capturing(&self) -> Res {
        if self.capturing() {
            crate::capture::invalidate(self);
            return Err(CUresult::ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        Ok(())
    }
}

thread_local! {
    static PER_THREAD: RefCell<(u64, Vec<Arc<Stream>>)> = const { RefCell::new((0, Vec::new())) };
}

/// The calling thread's per-thread default stream of `ctx`.
pub fn per_thread(ctx: &Arc<Ctx>) -> Res<Arc<Stream>> {
    let p = process::get();
    PER_THREAD
        .try_with(|t| {
            let mut t = t.borrow_mut();
            if t.0 != p.generation {
                std::mem::forget(std::mem::take(&mut t.1));
                t.0 = p.generation;
            }
            t.1.retain(|s| s.ctx.alive());
            if let Some(s) = t.1.iter().find(|s| s.ctx.id == ctx.id) {
                return s.clone();
            }
            // Registered so that context-wide synchronization sees it.
            let s = p
                .streams
                .insert(Stream::build(ctx.clone(), 0, 0, Kind::PerThread));
            t.1.push(s.clone());
            s
        })
        .map_err(|_| CUresult::ERROR_DEINITIALIZED)
}

/// Resolves a stream argument. NULL is the legacy default stream, or the
/// calling thread's per-thread stream for `_ptsz`/`_ptds` entry points.
pub fn resolve(h: CUstream, ds: DefaultStream) -> Res<Arc<Stream>> {
    if h.is_null() || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD {
        let ctx = context::current()?;
        let per_thread_stream =
            h == CU_STREAM_PER_THREAD || (h.is_null() && ds == DefaultStream::PerThread);
        return if per_thread_stream {
            per_thread(&ctx)
        } else {
            Ok(ctx.legacy_stream())
        };
    }
    let s = process::initialized()?.streams.get(h)?;
    if !s.ctx.alive() {
        return Err(context::INVALID_CONTEXT);
    }
    Ok(s)
}

fn create(ph: *mut CUstream, flags: u32, priority: i32) -> Res {
    let ctx = context::current()?;
    if ph.is_null() || flags & !1 != 0 {
        return Err(INVALID_VALUE);
    }
    let prio = priority.clamp(GREATEST_PRIORITY, 0);
    let s = process::get()
        .streams
        .insert(Stream::build(ctx, flags, prio, Kind::Created));
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(ph, handle_of(&s)) }
}

export! {
    fn cuStreamCreate(ph: *mut CUstream, flags: u32) { create(ph, flags, 0) }
}

export! {
    fn cuStreamCreateWithPriority(ph: *mut CUstream, flags: u32, priority: i32) { create(ph, flags, priority) }
}

export! {
    fn cuStreamDestroy_v2(h: CUstream) {
        let p = process::initialized()?;
        let s = p.streams.get(h)?;
        if s.kind != Kind::Created {
            return Err(INVALID_HANDLE);
        }
        // Work already queued completes on its own; host functions still run.
        p.streams.remove(h)?;
        Ok(())
    }
}

export_pt! {
    fn cuStreamQuery / cuStreamQuery_ptsz(h: CUstream) |ds| { resolve(h, ds)?.query() }
}

export_pt! {
    fn cuStreamSynchronize / cuStreamSynchronize_ptsz(h: CUstream) |ds| { resolve(h, ds)?.synchronize() }
}

export_pt! {
    /// Within a context everything is ordered already (one FIFO queue), so a
    /// wait on an event of the same context needs no further action. An
    /// event recorded during stream capture joins this stream to the capture.
    fn cuStreamWaitEvent / cuStreamWaitEvent_ptsz(h: CUstream, event: *mut c_void, flags: u32) |ds| {
        let s = resolve(h, ds)?;
        let e = process::initialized()?.events.get(event)?;
        if flags & !1 != 0 {
            return Err(INVALID_VALUE);
        }
        crate::capture::on_wait_event(&s, &e)?;
        // Cross-context waits: the other context's work runs on its own queue,
        // so honour the dependency by waiting for it before later submissions.
        if e.ctx.id != s.ctx.id || e.shared.is_some() {
            e.wait_recorded()?;
        }
        Ok(())
    }
}

export_pt! {
    fn cuStreamGetPriority / cuStreamGetPriority_ptsz(h: CUstream, priority: *mut i32) |ds| {
        let s = resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(priority, s.priority) }
    }
}

export_pt! {
    fn cuStreamGetFlags / cuStreamGetFlags_ptsz(h: CUstream, flags: *mut u32) |ds| {
        let s = resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(flags, s.flags) }
    }
}

export_pt! {
    fn cuStreamGetCtx / cuStreamGetCtx_ptsz(h: CUstream, pctx: *mut CUcontext) |ds| {
        let s = resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(pctx, handle_of(&s.ctx)) }
    }
}

export_pt! {
    /// CUDA 12.5 form; streams here never belong to a green context.
    fn cuStreamGetCtx_v2 / cuStreamGetCtx_v2_ptsz(h: CUstream, pctx: *mut CUcontext, pgreen: *mut *mut c_void) |ds| {
        let s = resolve(h, ds)?;
        if pctx.is_null() && pgreen.is_null() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: optional output pointers from the caller.
        unsafe {
            out_opt(pctx, handle_of(&s.ctx));
            out_opt(pgreen, std::ptr::null_mut());
        }
        Ok(())
    }
}

export_pt! {
    fn cuStreamGetId / cuStreamGetId_ptsz(h: CUstream, id: *mut u64) |ds| {
        let s = resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(id, s.id) }
    }
}

export_pt! {
    fn cuStreamGetDevice / cuStreamGetDevice_ptsz(h: CUstream, dev: *mut CUdevice) |ds| {
        let s = resolve(h, ds)?;
        // SAFETY: caller's output pointer.
        unsafe { out(dev, s.ctx.device) }
    }
}

/// `CUhostFn`.
pub type HostFn = unsafe extern "C" fn(*mut c_void);
/// `CUstreamCallback`.
pub type StreamCallback = unsafe extern "C" fn(CUstream, CUresult, *mut c_void);

fn host_func(h: CUstream, ds: DefaultStream, f: Option<HostFn>, data: *mut c_void) -> Res {
    let s = resolve(h, ds)?;
    let f = f.ok_or(INVALID_VALUE)?;
    let data = data as usize;
    if s.capturing() {
        return crate::capture::add_host(&s, f, data);
    }
    s.launch_host(Box::new(move || {
        // SAFETY: the caller's host function with its own user data, called once, as CUDA does.
        unsafe { f(data as *mut c_void) }
    }))
}

export_pt! {
    fn cuLaunchHostFunc / cuLaunchHostFunc_ptsz(h: CUstream, f: Option<HostFn>, data: *mut c_void) |ds| {
        host_func(h, ds, f, data)
    }
}

export_pt! {
    /// CUDA 13.1 form: `sync_mode` says how the host thread waits; this
    /// driver's host thread always sleeps, which satisfies both modes.
    fn cuLaunchHostFunc_v2 / cuLaunchHostFunc_v2_ptsz(h: CUstream, f: Option<HostFn>, data: *mut c_void, sync_mode: u32) |ds| {
        if sync_mode > 1 {
            return Err(INVALID_VALUE);
        }
        host_func(h, ds, f, data)
    }
}

export_pt! {
    fn cuStreamAddCallback / cuStreamAddCallback_ptsz(h: CUstream, cb: Option<StreamCallback>, data: *mut c_void, flags: u32) |ds| {
        let s = resolve(h, ds)?;
        let cb = cb.ok_or(INVALID_VALUE)?;
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        let hs = h as usize;
        let data = data as usize;
        s.launch_host(Box::new(move || {
            // SAFETY: the caller's callback with its own stream handle and user data, called once.
            unsafe { cb(hs as CUstream, CUresult::SUCCESS, data as *mut c_void) }
        }))
    }
}

/// Stream attributes (`CUstreamAttrID`): access policy window, synchronization
/// policy, priority, memory synchronization domain map and domain, NVLink
/// scheduling hint.
const STREAM_ATTRS: [u32; 6] = [1, 3, 8, 9, 10, 16];

export_pt! {
    /// A stream's attribute: what was set, else its default (the
    /// priority is the stream's own).
    fn cuStreamGetAttribute / cuStreamGetAttribute_ptsz(h: CUstream, attr: u32, value: *mut [u8; 64]) |ds| {
        let s = resolve(h, ds)?;
        if !STREAM_ATTRS.contains(&attr) {
            return Err(INVALID_VALUE);
        }
        let stored = s.attrs.lock().unwrap_or_else(|e| e.into_inner()).get(&attr).copied();
        let v = stored.unwrap_or_else(|| {
            let mut d = [0u8; 64];
            match attr {
                8 => d[..4].copy_from_slice(&s.priority.to_le_bytes()),
                // CU_SYNC_POLICY_AUTO
                3 => d[..4].copy_from_slice(&1u32.to_le_bytes()),
                _ => {}
            }
            d
        });
        // SAFETY: caller's output pointer (a CUstreamAttrValue, 64 bytes).
        unsafe { out(value, v) }
    }
}

export_pt! {
    fn cuStreamSetAttribute / cuStreamSetAttribute_ptsz(h: CUstream, attr: u32, value: *const [u8; 64]) |ds| {
        let s = resolve(h, ds)?;
        if !STREAM_ATTRS.contains(&attr) {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the caller's CUstreamAttrValue (64 bytes), when given.
        let v = *unsafe { value.as_ref() }.ok_or(INVALID_VALUE)?;
        if attr == 3 && !(1..=4).contains(&u32::from_le_bytes([v[0], v[1], v[2], v[3]])) {
            return Err(INVALID_VALUE);
        }
        s.attrs.lock().unwrap_or_else(|e| e.into_inner()).insert(attr, v);
        Ok(())
    }
}
