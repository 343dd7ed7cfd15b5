//! Proves the OpenAI Realtime adapter's real-time claim for the assistant's audio: parsing a
//! `response.output_audio.delta` (or the beta `response.audio.delta`) and decoding its base64
//! into the adapter's reused sample buffer allocate nothing once that buffer has grown. These
//! events arrive every 20–100 ms for as long as the bot speaks.
//!
//! Its own test binary, so the counting allocator affects nothing else. Counts are thread-local
//! (as in tests/no_alloc.rs), so the test harness's other threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use voicegate::agent::openai_realtime::schema::{self, ServerEvent};

struct Counting;

/// Allocations (`alloc` and `realloc`) and frees on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    allocs: u64,
    frees: u64,
}

thread_local!(static COUNTS: Cell<Counts> = const { Cell::new(Counts { allocs: 0, frees: 0 }) });

fn bump(free: bool) {
    let _ = COUNTS.try_with(|c| {
        let mut n = c.get();
        if free {
            n.frees += 1;
        } else {
            n.allocs += 1;
        }
        c.set(n);
    });
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only a thread-local
// `Cell` (no allocation, no re-entrancy into the allocator).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump(false);
        // SAFETY: forwarded with the caller's layout, which upholds `alloc`'s contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        bump(true);
        // SAFETY: `p` was allocated by `System` with layout `l` (we forward every allocation).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        bump(false);
        // SAFETY: forwarded unchanged; `p` and `l` come from a previous forwarded allocation.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn counts() -> Counts {
    COUNTS.with(Cell::get)
}

/// `ms` of a tone at 24 kHz as PCM16 little-endian bytes.
fn tone(ms: usize, phase: usize) -> Vec<u8> {
    (0..24 * ms)
        .flat_map(|i| {
            let t = (i + phase) as f32 / 24_000.0;
            (((t * 440.0 * std::f32::consts::TAU).sin() * 8_000.0) as i16).to_le_bytes()
        })
        .collect()
}

/// Audio deltas the way the API sends them (GA and beta names, 100 ms and 20 ms, `type` first
/// or not), with the PCM each carries.
fn deltas() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (k, ms) in [100, 100, 20, 100, 60, 100].into_iter().enumerate() {
        let pcm = tone(ms, k * 2_400);
        let b64 = STANDARD.encode(&pcm);
        let text = match k % 3 {
            0 => format!(
                r#"{{"type":"response.output_audio.delta","event_id":"event_CQd1mVAkD9kq2BFh{k}","response_id":"resp_CQd1lYnT0kXh3vJbq","item_id":"item_CQd1lZ2aP8eT1wQx","output_index":0,"content_index":0,"delta":"{b64}"}}"#
            ),
            1 => format!(
                r#"{{"type":"response.audio.delta","event_id":"event_{k}","response_id":"resp_CQd1lYnT0kXh3vJbq","item_id":"item_CQd1lZ2aP8eT1wQx","output_index":0,"content_index":0,"delta":"{b64}"}}"#
            ),
            _ => format!(
                r#"{{"event_id":"event_{k}","response_id":"resp_CQd1lYnT0kXh3vJbq","item_id":"item_CQd1lZ2aP8eT1wQx","output_index":0,"content_index":0,"delta":"{b64}","type":"response.output_audio.delta"}}"#
            ),
        };
        out.push((text, pcm));
    }
    out
}

/// What the adapter does with one delta before it reaches the backlog: parse, compare the ids
/// with the ones it remembers, decode into its reused buffer. `true` if the ids matched.
fn on_delta(text: &str, response: &str, item: &str, buf: &mut Vec<u8>) -> bool {
    match schema::parse(text) {
        Ok(ServerEvent::AudioDelta {
            response_id,
            item_id,
            delta,
        }) => {
            let (r, i, d): (&str, &str, &str) = (&response_id, &item_id, &delta);
            schema::decode_delta(d, buf).expect("valid base64");
            r == response && i == item
        }
        other => panic!("not an audio delta: {other:?}"),
    }
}

#[test]
fn parsing_and_decoding_an_audio_delta_allocates_nothing() {
    let deltas = deltas();
    // What the adapter remembers of the item playing (allocated when the item began).
    let response = String::from("resp_CQd1lYnT0kXh3vJbq");
    let item = String::from("item_CQd1lZ2aP8eT1wQx");
    let mut buf = Vec::new();
    // Warm-up: the decode buffer grows to the largest delta once, then is reused.
    for (text, pcm) in &deltas {
        assert!(on_delta(text, &response, &item, &mut buf));
        assert_eq!(&buf, pcm, "decoded audio differs");
    }
    const ROUNDS: u64 = 200;
    let before = counts();
    for _ in 0..ROUNDS {
        for (text, _) in &deltas {
            black_box(on_delta(
                black_box(text),
                &response,
                &item,
                black_box(&mut buf),
            ));
        }
    }
    let after = counts();
    let n = ROUNDS * deltas.len() as u64;
    let allocs = after.allocs - before.allocs;
    let frees = after.frees - before.frees;
    println!(
        "{n} audio deltas parsed and decoded: {allocs} allocations, {frees} frees ({:.2} and {:.2} per delta)",
        allocs as f64 / n as f64,
        frees as f64 / n as f64,
    );
    assert_eq!(
        (allocs, frees),
        (0, 0),
        "parsing or decoding an audio delta allocated"
    );
    // The loop really decoded (the last delta's audio is in the buffer).
    assert_eq!(&buf, &deltas.last().unwrap().1);
}

#[test]
fn the_counter_counts() {
    let before = counts();
    let v = black_box(vec![1u8; 16]);
    drop(v);
    let after = counts();
    assert_eq!(
        (after.allocs - before.allocs, after.frees - before.frees),
        (1, 1)
    );
}
