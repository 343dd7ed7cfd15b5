//! Two-stage barge-in end to end, through a real server and a real media socket: a bot turn
//! plays, the simulated caller's line echoes it back (closed loop: when the bot pauses, the echo
//! stops, as on a phone line), and the caller either says one short word over it (a
//! backchannel: the bot pauses, then resumes the same turn, and never loses it) or talks over
//! it (the bot pauses at once, then the interruption is confirmed and Vonage gets `clear`).
//!
//! No timing is asserted beyond generous orderings: the machine running the tests may be busy.

mod server_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use server_support::{Clip, clip, config_at, cut, silence, start_with, vonage_call};
use voicegate::agent::{Agent, AgentError, AgentEvent, AgentIo, BoxFuture, CallInfo};
use voicegate::core::SampleRate;
use voicegate::tools::vonage_side::{CallerScript, LineEcho};

/// What the agent saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Paused,
    Resumed(Duration),
    BargeIn,
}

/// An agent that says one long sentence (the bot reference of a corpus clip) as one turn and
/// records the turn-taking events it is told about.
#[derive(Debug)]
struct Talker {
    speech: Arc<Vec<i16>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Agent for Talker {
    fn agent_rate(&self, call_rate: SampleRate) -> SampleRate {
        call_rate
    }

    fn start(
        &self,
        _call: CallInfo,
        mut io: AgentIo,
    ) -> BoxFuture<'static, Result<(), AgentError>> {
        let speech = self.speech.clone();
        let seen = self.seen.clone();
        Box::pin(async move {
            // Let the call settle (connected, a few caller frames) before talking.
            tokio::time::sleep(Duration::from_millis(200)).await;
            io.audio.start_turn().map_err(AgentError::failed)?;
            let mut written = 0;
            let mut sink = [0i16; 960];
            loop {
                if written < speech.len() {
                    written += io.audio.write(&speech[written..]);
                    if written == speech.len() {
                        io.audio.end_turn().map_err(AgentError::failed)?;
                    }
                    io.audio.flush();
                }
                tokio::select! {
                    ev = io.events.recv() => match ev {
                        None | Some(AgentEvent::Ended(_)) => return Ok(()),
                        Some(AgentEvent::Paused { .. }) => seen.lock().unwrap().push(Seen::Paused),
                        Some(AgentEvent::FalseInterruption { paused, .. }) => {
                            seen.lock().unwrap().push(Seen::Resumed(paused))
                        }
                        Some(AgentEvent::BargeIn(_)) => {
                            seen.lock().unwrap().push(Seen::BargeIn);
                            // The turn is gone; say nothing more.
                            written = speech.len();
                        }
                        Some(_) => {}
                    },
                    () = io.audio.ready() => while io.audio.read(&mut sink) > 0 {},
                }
            }
        })
    }
}

fn bot_speech() -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/echo_only_001.out.wav");
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<i16>().map(Result::unwrap).collect()
}

/// Runs one call: the bot talks from 200 ms, the caller says `words` starting 1.6 s into the
/// call, over a line with a 60 ms, −20 dB echo. Returns what the agent saw and the number of
/// `clear`s.
async fn run(words: Vec<i16>, uuid: &str) -> (Vec<Seen>, u64, u64) {
    run_from(1_600, words, uuid).await
}

/// [`run`] with the caller starting `start_ms` into the call.
async fn run_from(start_ms: u32, words: Vec<i16>, uuid: &str) -> (Vec<Seen>, u64, u64) {
    let rate = SampleRate::Hz16000;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let agent = Talker {
        speech: Arc::new(bot_speech()),
        seen: seen.clone(),
    };
    let server = start_with(config_at(rate), Arc::new(agent)).await;
    let mut caller = silence(rate, start_ms);
    caller.extend_from_slice(&words);
    let script =
        CallerScript::new(rate, &caller, Duration::from_millis(1_500)).with_echo(LineEcho {
            delay: Duration::from_millis(60),
            gain_db: -20.0,
        });
    let call = vonage_call(server.addr, uuid, script, Duration::from_secs(6)).await;
    let (report, _heard) = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call ends")
        .expect("the call task does not panic");
    assert_eq!(report.counters.frame_size_violations, 0);
    let seen = seen.lock().unwrap().clone();
    (seen, report.counters.clears, report.counters.audible_played)
}

fn speech_clip() -> Clip {
    clip("speech_001")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_pauses_the_bot_then_it_resumes_its_turn() {
    // speech_001's first word (labelled 1100–1380 ms): a short "yes" over the bot.
    let word = cut(&speech_clip(), 1_040, 1_440, 1);
    let (seen, clears, audible) = run(word, "00000000-0000-4000-8000-0000000bc001").await;
    println!("backchannel: agent saw {seen:?}, {clears} clears, {audible} audible frames");
    assert_eq!(
        clears, 0,
        "the bot lost its turn on a backchannel: {seen:?}"
    );
    assert!(!seen.contains(&Seen::BargeIn), "{seen:?}");
    let paused = seen.iter().position(|s| *s == Seen::Paused);
    let resumed = seen.iter().position(|s| matches!(s, Seen::Resumed(_)));
    assert!(
        matches!((paused, resumed), (Some(p), Some(r)) if p < r),
        "expected a pause and then a resume: {seen:?}"
    );
    for s in &seen {
        if let Seen::Resumed(d) = s {
            assert!(*d < Duration::from_millis(1_000), "paused for {d:?}");
        }
    }
    // The whole sentence still played (5.3 s of bot audio, 20 ms frames, minus its quiet ends).
    assert!(
        audible > 150,
        "only {audible} audible frames reached the caller"
    );
}

/// One `clear`, and the bot paused before the barge-in was confirmed.
fn assert_paused_then_cleared(seen: &[Seen], clears: u64) {
    assert_eq!(clears, 1, "expected exactly one clear: {seen:?}");
    let paused = seen.iter().position(|s| *s == Seen::Paused);
    let barge = seen.iter().position(|s| *s == Seen::BargeIn);
    assert!(
        matches!((paused, barge), (Some(p), Some(b)) if p < b),
        "expected the bot to pause before the barge-in was confirmed: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_pauses_the_bot_then_clears_it() {
    // Two seconds of speech_001's second phrase (labelled 1580–3710 ms) over the bot.
    let words = cut(&speech_clip(), 1_540, 3_600, 1);
    let (seen, clears, _) = run(words, "00000000-0000-4000-8000-0000000b1001").await;
    println!("barge-in: agent saw {seen:?}, {clears} clears");
    assert_paused_then_cleared(&seen, clears);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_talking_over_the_bots_first_words_pauses_it() {
    // The same two seconds of speech, 400 ms into the bot's first turn: the echo fit has not had
    // a second of bot audio yet, so only what came back in those 400 ms tells the caller from
    // the echo. The bot must go quiet for them and stay mostly quiet until the clear: with the
    // echo bounded only by the worst case it played 39–40 more frames (~800 ms) over the caller
    // (measured: 59–60 audible in all), with the per-delay bounds 14–18 (34–38).
    let words = cut(&speech_clip(), 1_540, 3_600, 1);
    let (seen, clears, audible) =
        run_from(600, words, "00000000-0000-4000-8000-0000000b1003").await;
    println!("first words: agent saw {seen:?}, {clears} clears, {audible} audible frames");
    assert_paused_then_cleared(&seen, clears);
    // 20 frames play before the caller starts; the rest is what they heard over themselves.
    assert!(
        audible < 48,
        "the caller heard {} frames of the bot over their own voice: {seen:?}",
        audible.saturating_sub(20)
    );
}
