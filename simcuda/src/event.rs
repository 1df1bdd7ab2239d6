//! Events: record markers in a stream; timing events stamp a simgpu timing
//! slot when the device reaches them, which is what elapsed times read.

use crate::context::{self, Ctx};
use crate::entry::{out, Res, INVALID_HANDLE, INVALID_VALUE};
use crate::process::{self, Handle, Magic};
use crate::stream::{self, DefaultStream};
use cuda_abi::{CUevent, CUresult, CUstream, CU_EVENT_BLOCKING_SYNC, CU_EVENT_DISABLE_TIMING};
use std::sync::{Arc, Mutex, MutexGuard};

pub const CU_EVENT_INTERPROCESS: u32 = 4;

pub struct Event {
    magic: Magic,
    pub ctx: Arc<Ctx>,
    pub flags: u32,
    state: Mutex<State>,
    /// An interprocess event's last record, shared with the processes that
    /// opened its IPC handle (see `ipc`).
    pub shared: Option<crate::ipc::SharedRecord>,
}

#[derive(Default)]
pub struct State {
    slot: Option<simgpu::EventSlot>,
    /// Sequence number of the last record, once recorded outside capture.
    seq: Option<simgpu::Seq>,
    /// Set when last recorded in a capturing stream: the capture and the
    /// nodes the record depended on.
    pub captured: Option<crate::capture::CapturedRecord>,
}

impl Handle for Event {
    const MAGIC: u32 = 0xEEEE_0001;
    fn magic(&self) -> &Magic {
        &self.magic
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let (Some(slot), Some(sim)) = (st.slot.take(), self.ctx.sim_created()) {
            sim.free_event(slot);
        }
    }
}

impl Event {
    /// An event opened from another process's IPC handle.
    pub fn imported(ctx: Arc<Ctx>, flags: u32, shared: crate::ipc::SharedRecord) -> Event {
        Event {
            magic: Magic::new(Event::MAGIC),
            ctx,
            flags,
            state: Mutex::new(State::default()),
            shared: Some(shared),
        }
    }

    pub fn timed(&self) -> bool {
        self.flags & CU_EVENT_DISABLE_TIMING == 0
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the event at the current end of `s` (outside capture).
    fn record(&self, s: &stream::Stream) -> Res {
        if s.ctx.id != self.ctx.id {
            return Err(INVALID_HANDLE);
        }
        let sim = self.ctx.sim()?;
        let mut st = self.state();
        let seq = if self.timed() {
            if st.slot.is_none() {
                st.slot = Some(sim.alloc_event().ok_or(CUresult::ERROR_OUT_OF_MEMORY)?);
            }
            sim.try_record_event(st.slot.as_ref().expect("just set"))
                .map_err(context::sim_err)?
        } else {
            sim.try_submit(simgpu::Work {
                kind: simgpu::WorkKind::Marker,
                duration_ns: 0,
                tag: 0,
            })
            .map_err(context::sim_err)?
        };
        s.note(seq);
        st.seq = Some(seq);
        st.captured = None;
        if let Some(r) = &self.shared {
            r.store(self.ctx.device, sim.index(), sim.generation(), seq);
        }
        Ok(())
    }

    /// For an interprocess event: whether its last record, by whichever
    /// process, has completed (None: not an interprocess event).
    fn shared_complete(&self) -> Option<Res<bool>> {
        let r = self.shared.as_ref()?;
        let Some((device, index, gen, seq)) = r.load() else {
            return Some(Ok(true)); // never recorded
        };
        Some((|| {
            let d = process::initialized()?.device(device)?;
            match d.sim.try_is_complete(index, gen, seq) {
                Ok(done) => Ok(done),
                // Its context is gone (the recording process exited): nothing to wait for.
                Err(simgpu::SimError::Lost | simgpu::SimError::Gone) => Ok(true),
                Err(e) => Err(context::sim_err(e)),
            }
        })())
    }

    /// Whether the last record has completed.
    pub fn complete(&self) -> Res<bool> {
        if let Some(r) = self.shared_complete() {
            return r;
        }
        match self.state().seq {
            Some(seq) => self
                .ctx
                .sim()?
                .try_is_complete(seq)
                .map_err(context::sim_err),
            None => Ok(true),
        }
    }

    /// Sleeps until the last record has completed (no-op if never recorded).
    pub fn wait_recorded(&self) -> Res {
        if self.shared.is_some() {
            // Another process may have recorded it: poll the device.
            while !self.complete()? {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            return Ok(());
        }
        let seq = self.state().seq;
        if let Some(seq) = seq {
            self.ctx.sim()?.try_wait(seq).map_err(context::sim_err)?;
        }
        Ok(())
    }

    /// Completion time of the last record, `NOT_READY` before it completes.
    fn time(&self) -> Res<u64> {
        let st = self.state();
        let (Some(slot), Some(seq)) = (st.slot.as_ref(), st.seq) else {
            return Err(INVALID_HANDLE);
        };
        self.ctx
            .sim()?
            .try_event_time(slot, seq)
            .map_err(context::sim_err)?
            .ok_or(CUresult::ERROR_NOT_READY)
    }
}

export! {
    fn cuEventCreate(ph: *mut CUevent, flags: u32) {
        let ctx = context::current()?;
        if ph.is_null() || flags & !(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS) != 0 {
            return Err(INVALID_VALUE);
        }
        if flags & CU_EVENT_INTERPROCESS != 0 && flags & CU_EVENT_DISABLE_TIMING == 0 {
            return Err(INVALID_VALUE);
        }
        let shared = if flags & CU_EVENT_INTERPROCESS != 0 { Some(crate::ipc::SharedRecord::new()?) } else { None };
        let e = process::get().events.insert(Event { magic: Magic::new(Event::MAGIC), ctx, flags, state: Mutex::new(State::default()), shared });
        // SAFETY: caller's output pointer (checked non-NULL).
        unsafe { out(ph, process::handle_of(&e)) }
    }
}

fn record(event: CUevent, h: CUstream, ds: DefaultStream) -> Res {
    let p = process::initialized()?;
    let e = p.events.get(event)?;
    let s = stream::resolve(h, ds)?;
    if crate::capture::on_record_event(&s, &e)? {
        return Ok(());
    }
    e.record(&s)
}

export_pt! {
    fn cuEventRecord / cuEventRecord_ptsz(event: CUevent, h: CUstream) |ds| { record(event, h, ds) }
}

export_pt! {
    fn cuEventRecordWithFlags / cuEventRecordWithFlags_ptsz(event: CUevent, h: CUstream, flags: u32) |ds| {
        // CU_EVENT_RECORD_EXTERNAL (1) only matters inside stream capture.
        if flags & !1 != 0 {
            return Err(INVALID_VALUE);
        }
        record(event, h, ds)
    }
}

export! {
    fn cuEventQuery(event: CUevent) {
        let e = process::initialized()?.events.get(event)?;
        if e.state().captured.is_some() {
            return Err(CUresult(907));
        }
        if e.complete()? { Ok(()) } else { Err(CUresult::ERROR_NOT_READY) }
    }
}

export! {
    /// Sleeps (never spins) until the event's last record has completed.
    fn cuEventSynchronize(event: CUevent) {
        let e = process::initialized()?.events.get(event)?;
        if e.state().captured.is_some() {
            return Err(CUresult(907));
        }
        e.wait_recorded()
    }
}

fn elapsed(ms: *mut f32, start: CUevent, end: CUevent) -> Res {
    let p = process::initialized()?;
    let (a, b) = (p.events.get(start)?, p.events.get(end)?);
    if ms.is_null() {
        return Err(INVALID_VALUE);
    }
    if !a.timed() || !b.timed() {
        return Err(INVALID_HANDLE);
    }
    let (ta, tb) = (a.time()?, b.time()?);
    let v = (tb as f64 - ta as f64) / 1e6;
    // SAFETY: caller's output pointer (checked non-NULL).
    unsafe { out(ms, v as f32) }
}

export! {
    fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) { elapsed(ms, start, end) }
}

export! {
    fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) { elapsed(ms, start, end) }
}

export! {
    fn cuEventDestroy_v2(event: CUevent) {
        process::initialized()?.events.remove(event)?;
        Ok(())
    }
}
