//! Bookkeeping of virtual memory management (VMM) allocations.
//!
//! A physical allocation (a `cuMemCreate` handle) stays charged while any
//! reference to it (its creation, each `cuMemRetainAllocationHandle`) is
//! unreleased or any mapping of it remains, as the driver frees it only then.
//! The caller holds this table's lock across the driver call it records, so
//! no other thread sees a handle value the driver reused before the record
//! of its previous life is gone.

use std::collections::{BTreeMap, HashMap};

/// Handles, their references and mappings, and what each is charged (`C`).
#[derive(Debug)]
pub struct Vmm<C> {
    handles: HashMap<u64, VmmHandle<C>>,
    /// Mappings by start address: (size, handle).
    maps: BTreeMap<u64, (u64, u64)>,
}

impl<C> Default for Vmm<C> {
    fn default() -> Self {
        Vmm {
            handles: HashMap::new(),
            maps: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct VmmHandle<C> {
    charge: C,
    refs: u32,
    maps: u32,
}

impl<C> Vmm<C> {
    pub fn created(&mut self, handle: u64, charge: C) {
        self.handles.insert(
            handle,
            VmmHandle {
                charge,
                refs: 1,
                maps: 0,
            },
        );
    }
    pub fn retained(&mut self, handle: u64) {
        if let Some(h) = self.handles.get_mut(&handle) {
            h.refs += 1;
        }
    }
    pub fn mapped(&mut self, ptr: u64, size: u64, handle: u64) {
        if let Some(h) = self.handles.get_mut(&handle) {
            h.maps += 1;
            self.maps.insert(ptr, (size, handle));
        }
    }
    /// Removes the mappings inside `[ptr, ptr+size)`; returns charges to give back.
    pub fn unmapped(&mut self, ptr: u64, size: u64) -> Vec<C> {
        let end = ptr.saturating_add(size);
        let starts: Vec<u64> = self.maps.range(ptr..end).map(|(s, _)| *s).collect();
        let mut freed = Vec::new();
        for s in starts {
            if let Some((_, handle)) = self.maps.remove(&s) {
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.maps = h.maps.saturating_sub(1);
                }
                freed.extend(self.free_if_unused(handle));
            }
        }
        freed
    }
    /// One reference was released; returns the charge if nothing holds the
    /// allocation any more.
    pub fn released(&mut self, handle: u64) -> Option<C> {
        let h = self.handles.get_mut(&handle)?;
        h.refs = h.refs.saturating_sub(1);
        self.free_if_unused(handle)
    }
    fn free_if_unused(&mut self, handle: u64) -> Option<C> {
        let h = self.handles.get(&handle)?;
        if h.refs == 0 && h.maps == 0 {
            self.handles.remove(&handle).map(|h| h.charge)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_allocations_live_while_referenced_or_mapped() {
        let mut v = Vmm::default();
        v.created(7, 100u64);
        v.mapped(0x1000, 0x100, 7);
        v.retained(7);
        assert!(
            v.released(7).is_none(),
            "the retained reference and the mapping remain"
        );
        assert!(
            v.unmapped(0x1000, 0x100).is_empty(),
            "the retained reference remains"
        );
        v.mapped(0x2000, 0x100, 7);
        assert!(v.released(7).is_none(), "still mapped");
        assert_eq!(v.unmapped(0x1f00, 0x300), vec![100]);
        v.created(8, 50);
        assert_eq!(v.released(8), Some(50), "never mapped");
        assert!(v.released(9).is_none(), "unknown handles are ignored");
    }
}
