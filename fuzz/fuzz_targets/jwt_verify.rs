//! Fuzz target `jwt_verify`: see `voicegate::fuzzing::jwt_verify` for the input encoding and the invariants.
//!
//! Run: `cargo +nightly fuzz run jwt_verify -- -max_total_time=600 -jobs=1` (from the crate root).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    voicegate::fuzzing::jwt_verify(data);
});
