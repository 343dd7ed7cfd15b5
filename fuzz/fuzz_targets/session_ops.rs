//! Fuzz target `session_ops`: arbitrary bytes as a program (caller frames, text messages,
//! agent writes, turns, marks, interrupts, clock ticks) for one `Session` and its `AgentLink`.
//! The invariants are documented on `voicegate::fuzzing::session_ops`.
//!
//! Run: `cargo +nightly fuzz run session_ops -- -max_total_time=600 -jobs=1` (from the crate root).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    voicegate::fuzzing::session_ops(data);
});
