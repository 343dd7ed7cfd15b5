//! Fuzz target `ws_text`: arbitrary bytes (lossy UTF-8) as one Vonage text message.
//! The invariants are documented on `voicegate::fuzzing::ws_text`.
//!
//! Run: `cargo +nightly fuzz run ws_text -- -max_total_time=600 -jobs=1` (from the crate root).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    voicegate::fuzzing::ws_text(data);
});
