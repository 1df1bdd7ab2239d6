//! The broker's wire decoder against arbitrary bytes: it never panics, and
//! whatever it accepts encodes back to a frame that decodes to the same
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tslice_proto::{FrameBuf, Msg};

fuzz_target!(|data: &[u8]| {
    let _ = Msg::decode(data);
    let mut fb = FrameBuf::new();
    fb.push(data);
    while let Ok(Some(m)) = fb.next_msg() {
        let frame = m.encode();
        assert_eq!(Msg::decode(&frame[4..]).as_ref(), Ok(&m), "a decoded message re-encodes to itself");
    }
});
