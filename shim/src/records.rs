//! Allocation records, and their ordering against context destruction.
//!
//! Every capped allocation that belongs to a context (device pointers,
//! arrays) is recorded `key → Charge { device, bytes, context }` so that its
//! free gives the charge back, and so that destroying its context (which
//! frees it in the driver) does too. Two promises hold whatever threads do:
//!
//! * a charge comes back only *after* the driver has freed the memory (a
//!   neighbour can never slip into memory that is still held);
//! * no charge outlives its memory (a destroy cannot miss an allocation that
//!   raced with it, nor a free that failed because of it).
//!
//! Without holding any lock across a driver call (a context destroy waits
//! for the context's queued work, which may wait for another thread's
//! allocation): every allocation and free is an *operation in flight* of
//! its context from before its driver call until its record is settled, and
//! a destroy
//! 1. marks the context dying and takes its records out (`destroy_begin`),
//! 2. calls the driver with no lock held,
//! 3. waits for the context's operations in flight to settle (they finish
//!    promptly: the driver refuses work on a context it has destroyed), then
//!    gives the charges back if the context is gone, or puts the records
//!    back if not (`destroy_end`).
//!
//! While a context is dying, an allocation that succeeds in it records into
//! its dying bucket, and a free takes its record from there (and puts it
//! back there if the driver refuses), so step 3 settles exactly the memory
//! the destroy freed. Bookkeeping is sharded by context; the driver calls
//! of other contexts never wait for a destroy.

use crate::state::{Charge, ShardedMap};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

const LIFE_SHARDS: usize = 16;

/// Which record table a key lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Device pointers (`cuMemAlloc*`, managed, pitch, stream-ordered).
    Ptrs,
    /// `CUarray` and `CUmipmappedArray` handles.
    Arrays,
}

#[derive(Clone, Copy, Debug)]
struct Taken {
    table: Table,
    key: u64,
    charge: Charge,
}

#[derive(Default)]
struct Life {
    /// Operations in flight per context.
    inflight: HashMap<usize, u32>,
    /// Contexts being destroyed, with the records taken out of the tables.
    dying: HashMap<usize, Vec<Taken>>,
}

pub struct Records {
    ptrs: ShardedMap<Charge>,
    arrays: ShardedMap<Charge>,
    life: [Mutex<Life>; LIFE_SHARDS],
    /// Contexts being destroyed (frees look in their buckets only then).
    dying: AtomicU32,
}

/// An operation in flight in a context; ends it when dropped unless it was
/// settled (so a panic cannot leave a destroy waiting for ever).
pub struct Op<'r> {
    records: &'r Records,
    ctx: usize,
    open: bool,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if self.open {
            let mut l = self.records.life(self.ctx);
            end(&mut l, self.ctx);
        }
    }
}

fn end(l: &mut Life, ctx: usize) {
    if let Some(n) = l.inflight.get_mut(&ctx) {
        *n -= 1;
        if *n == 0 {
            l.inflight.remove(&ctx);
        }
    }
}

impl Op<'_> {
    /// The allocation succeeded: record it (in its context's dying bucket
    /// if the context is being destroyed) and end the operation.
    pub fn record(mut self, table: Table, key: u64, charge: Charge) {
        let mut l = self.records.life(self.ctx);
        match l.dying.get_mut(&self.ctx) {
            Some(bucket) => bucket.push(Taken { table, key, charge }),
            None => self.records.table(table).insert(key, charge),
        }
        end(&mut l, self.ctx);
        self.open = false;
    }
}

/// A free in flight: its record is out of the tables until `settle`.
pub struct Freeing<'r> {
    op: Op<'r>,
    table: Table,
    key: u64,
    pub charge: Charge,
}

impl Freeing<'_> {
    /// The driver answered: on failure the record goes back where it would
    /// be now (the table, or the dying bucket of its context).
    pub fn settle(mut self, freed: bool) {
        let r = self.op.records;
        let mut l = r.life(self.op.ctx);
        if !freed {
            match l.dying.get_mut(&self.op.ctx) {
                Some(bucket) => bucket.push(Taken {
                    table: self.table,
                    key: self.key,
                    charge: self.charge,
                }),
                None => r.table(self.table).insert(self.key, self.charge),
            }
        }
        end(&mut l, self.op.ctx);
        self.op.open = false;
    }
}

/// The records of a context being destroyed, between `destroy_begin` and
/// `destroy_end`.
pub struct Destroying {
    ctx: usize,
    /// False when another destroy of the same context was already under way
    /// (this one only calls the driver, which refuses it).
    owner: bool,
}

impl Records {
    pub fn new() -> Records {
        Records {
            ptrs: ShardedMap::new(),
            arrays: ShardedMap::new(),
            life: std::array::from_fn(|_| Mutex::new(Life::default())),
            dying: AtomicU32::new(0),
        }
    }

    fn table(&self, t: Table) -> &ShardedMap<Charge> {
        match t {
            Table::Ptrs => &self.ptrs,
            Table::Arrays => &self.arrays,
        }
    }

    fn life(&self, ctx: usize) -> MutexGuard<'_, Life> {
        let i = (crate::state::mix(ctx as u64) >> 60) as usize % LIFE_SHARDS;
        // A poisoned shard only means a panic elsewhere; its maps are consistent.
        self.life[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an allocation in context `ctx` (before its reservation).
    pub fn begin(&self, ctx: usize) -> Op<'_> {
        *self.life(ctx).inflight.entry(ctx).or_insert(0) += 1;
        Op {
            records: self,
            ctx,
            open: true,
        }
    }

    /// The context a recorded key belongs to, wherever its record is now.
    fn locate(&self, table: Table, key: u64) -> Option<usize> {
        if let Some(c) = self.table(table).get(key) {
            return Some(c.ctx);
        }
        if self.dying.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.life.iter().find_map(|shard| {
            let l = shard.lock().unwrap_or_else(|p| p.into_inner());
            l.dying.iter().find_map(|(ctx, b)| {
                b.iter()
                    .any(|t| t.table == table && t.key == key)
                    .then_some(*ctx)
            })
        })
    }

    /// Starts a free of `key`: takes its record out (from its table or its
    /// context's dying bucket). None when the key is not recorded (not
    /// capped, or not an allocation tslice saw).
    pub fn begin_free(&self, table: Table, key: u64) -> Option<Freeing<'_>> {
        // The record may move between the lookup and the context's lock (a
        // destroy starting or ending): look again.
        for _ in 0..64 {
            let ctx = self.locate(table, key)?;
            let mut l = self.life(ctx);
            let from_table = self.table(table).remove(key);
            let charge = match from_table {
                Some(c) if c.ctx == ctx => Some(c),
                Some(other) => {
                    // The key now belongs to another context: not ours to take here.
                    self.table(table).insert(key, other);
                    None
                }
                None => l.dying.get_mut(&ctx).and_then(|b| {
                    let i = b.iter().position(|t| t.table == table && t.key == key)?;
                    Some(b.swap_remove(i).charge)
                }),
            };
            if let Some(charge) = charge {
                *l.inflight.entry(ctx).or_insert(0) += 1;
                drop(l);
                return Some(Freeing {
                    op: Op {
                        records: self,
                        ctx,
                        open: true,
                    },
                    table,
                    key,
                    charge,
                });
            }
        }
        None
    }

    /// Step 1 of a destroy: marks `ctx` dying and takes its records out.
    pub fn destroy_begin(&self, ctx: usize) -> Destroying {
        let mut l = self.life(ctx);
        if l.dying.contains_key(&ctx) {
            return Destroying { ctx, owner: false };
        }
        let mut taken: Vec<Taken> = Vec::new();
        for table in [Table::Ptrs, Table::Arrays] {
            let recs = self.table(table).take_where(|c| c.ctx == ctx);
            taken.extend(
                recs.into_iter()
                    .map(|(key, charge)| Taken { table, key, charge }),
            );
        }
        l.dying.insert(ctx, taken);
        self.dying.fetch_add(1, Ordering::AcqRel);
        Destroying { ctx, owner: true }
    }

    /// Step 3 of a destroy: once the context's operations in flight have
    /// settled, returns the charges its destruction freed (`destroyed`), or
    /// puts its records back (not destroyed) and returns none.
    pub fn destroy_end(&self, d: Destroying, destroyed: bool) -> Vec<Charge> {
        if !d.owner {
            return Vec::new();
        }
        loop {
            {
                let mut l = self.life(d.ctx);
                if !l.inflight.contains_key(&d.ctx) {
                    let bucket = l.dying.remove(&d.ctx).unwrap_or_default();
                    self.dying.fetch_sub(1, Ordering::AcqRel);
                    if destroyed {
                        return bucket.into_iter().map(|t| t.charge).collect();
                    }
                    for t in bucket {
                        self.table(t.table).insert(t.key, t.charge);
                    }
                    return Vec::new();
                }
            }
            // Operations on a context being destroyed end promptly (the
            // driver refuses them); nothing here holds a lock meanwhile.
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
}

impl Default for Records {
    fn default() -> Self {
        Records::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(ctx: usize, bytes: u64) -> Charge {
        Charge { dev: 0, bytes, ctx }
    }

    #[test]
    fn allocations_and_frees_outside_destroys() {
        let r = Records::new();
        r.begin(1).record(Table::Ptrs, 0x1000, charge(1, 10));
        let f = r.begin_free(Table::Ptrs, 0x1000).expect("recorded");
        assert_eq!(f.charge.bytes, 10);
        f.settle(false); // the driver refused: back in the table
        let f = r.begin_free(Table::Ptrs, 0x1000).expect("back");
        f.settle(true);
        assert!(r.begin_free(Table::Ptrs, 0x1000).is_none());
        assert!(
            r.begin_free(Table::Arrays, 0x2000).is_none(),
            "never recorded"
        );
    }

    #[test]
    fn a_destroy_gives_back_what_was_in_the_context_and_what_raced_with_it() {
        let r = Records::new();
        r.begin(1).record(Table::Ptrs, 0x1000, charge(1, 10));
        r.begin(1).record(Table::Arrays, 0x2000, charge(1, 20));
        r.begin(2).record(Table::Ptrs, 0x3000, charge(2, 40));
        let racing = r.begin(1); // an allocation whose driver call is under way
        let d = r.destroy_begin(1);
        racing.record(Table::Ptrs, 0x4000, charge(1, 80)); // it succeeded before the destroy
                                                           // A free of a dying context's allocation the driver refuses goes back
                                                           // to the bucket; one it accepts is given back by the free itself.
        r.begin_free(Table::Ptrs, 0x1000).unwrap().settle(false);
        let freed = r.begin_free(Table::Arrays, 0x2000).unwrap();
        assert_eq!(freed.charge.bytes, 20);
        freed.settle(true);
        let mut back: Vec<u64> = r.destroy_end(d, true).iter().map(|c| c.bytes).collect();
        back.sort();
        assert_eq!(back, vec![10, 80]);
        assert!(
            r.begin_free(Table::Ptrs, 0x1000).is_none(),
            "gone with the context"
        );
        assert!(
            r.begin_free(Table::Ptrs, 0x3000).is_some(),
            "other contexts untouched"
        );
    }

    #[test]
    fn a_failed_destroy_puts_everything_back() {
        let r = Records::new();
        r.begin(1).record(Table::Ptrs, 0x1000, charge(1, 10));
        let d = r.destroy_begin(1);
        let second = r.destroy_begin(1);
        r.begin(1).record(Table::Ptrs, 0x2000, charge(1, 20));
        assert!(
            r.destroy_end(second, true).is_empty(),
            "only the first destroy settles"
        );
        assert!(r.destroy_end(d, false).is_empty());
        assert_eq!(
            r.begin_free(Table::Ptrs, 0x1000).map(|f| f.charge.bytes),
            Some(10)
        );
        assert_eq!(
            r.begin_free(Table::Ptrs, 0x2000).map(|f| f.charge.bytes),
            Some(20)
        );
    }

    #[test]
    fn a_destroy_waits_for_operations_in_flight_in_its_context_only() {
        let r = std::sync::Arc::new(Records::new());
        let other = r.begin(2); // in flight in another context: no wait for it
        let op = r.begin(1);
        let d = r.destroy_begin(1);
        let r2 = r.clone();
        let t = std::thread::spawn(move || r2.destroy_end(d, true).len());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !t.is_finished(),
            "waits for the allocation in flight in context 1"
        );
        op.record(Table::Ptrs, 0x1000, charge(1, 10));
        assert_eq!(t.join().unwrap(), 1);
        drop(other);
    }

    #[test]
    fn a_dropped_operation_ends() {
        let r = Records::new();
        drop(r.begin(1));
        let d = r.destroy_begin(1);
        assert!(
            r.destroy_end(d, true).is_empty(),
            "nothing in flight, nothing to wait for"
        );
    }
}
