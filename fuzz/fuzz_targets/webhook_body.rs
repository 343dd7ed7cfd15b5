//! Fuzz target `webhook_body`: see `voicegate::fuzzing::webhook_body` for the input encoding and the invariants.
//!
//! Run: `cargo +nightly fuzz run webhook_body -- -max_total_time=600 -jobs=1` (from the crate root).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    voicegate::fuzzing::webhook_body(data);
});
