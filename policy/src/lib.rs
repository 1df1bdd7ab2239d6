//! # tslice-policy
//!
//! The decisions tslice makes, as pure code: no FFI, no `unsafe`, no global
//! state, time passed in as arguments. The shim
//! (and later the broker) wire these into the driver; everything here is
//! tested on its own.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod bucket;
pub mod class;
pub mod estimate;
pub mod fairshare;
pub mod gate;
pub mod ledger;
pub mod podcgroup;
pub mod quota;
pub mod vmm;
