//! Fuzz target `frame_parse`: arbitrary bytes as one binary media message at 8, 16 and 24 kHz.
//! The invariants are documented on `voicegate::fuzzing::frame_parse`.
//!
//! Run: `cargo +nightly fuzz run frame_parse -- -max_total_time=600 -jobs=1` (from the crate root).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    voicegate::fuzzing::frame_parse(data);
});
