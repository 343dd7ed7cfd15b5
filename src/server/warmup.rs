//! One throwaway call through the audio pipeline at start-up, before the first real one.
//!
//! The first call at a rate pays for building what all calls share (the resampler filters and
//! FFT plans per rate pair, the band analyser's window and plan: `core::resample`,
//! `core::spectrum`) and for paging in the DSP code. Done here instead, (1) that first call
//! does not stall its media task with it, and (2) the shared tables are allocated at start-up,
//! at the bottom of the main heap, instead of in the middle of the first burst of calls, where
//! these few long-lived blocks pinned heap pages that `malloc_trim` could otherwise give back
//! once the burst was over; and the code they page in counts in the baseline RSS rather than
//! looking like memory the calls kept.
//!
//! Then [`loopback_call`] takes one short call through the whole server, as Vonage would place
//! it (answer webhook, media WebSocket, caller speech, the echo agent's reply, event webhooks,
//! hang-up), on a throwaway instance bound to an ephemeral loopback port: the code only a real
//! call reaches (hyper and axum's request paths, the WebSocket upgrade and framing, the media
//! loop, the echo agent, the call's logging) is paged in before the first call too. Without it
//! the first call paged in ~0.8 MiB of file-backed memory that stayed resident for good and
//! looked like memory the calls had kept.
//!
//! Not real-time: runs once at start-up (~1 ms per rate for the sessions, ~2 s for the loopback
//! call), after the listener is bound and before it accepts: connections that come early wait
//! in its backlog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Map;
use tokio::net::TcpListener;

use super::config::{AgentKind, ServerConfig};
use super::state::AppState;
use crate::agent::Agent;
use crate::agent::echo::EchoAgent;
use crate::core::{FRAME, SampleRate, Session, SessionConfig};
use crate::tools::vonage_side::{
    self, AuthSettings, CallIdentity, CallerScript, EventPoster, HttpClient, Leg, NoObserver,
    PlainUrl, StopRule,
};

/// Frames run through each session: enough for an utterance to start and end (60 ms onset,
/// 500 ms hangover by default) and a reply to be paced out.
const FRAMES: u32 = 100;

/// Runs a throwaway session at the configured call rate and its agent rate, plus the other
/// common call rates (8 and 16 kHz) with the same agent rate, through caller speech and an agent
/// reply. `agent_rate_for` is the agent's choice when `--agent-rate` is not set. Errors (a
/// configuration the calls would reject too) are ignored: the calls report them.
pub fn warm_up(
    session: &SessionConfig,
    call_rate: SampleRate,
    agent_rate: Option<SampleRate>,
    agent_rate_for: impl Fn(SampleRate) -> SampleRate,
) {
    let mut rates = vec![call_rate];
    for r in [SampleRate::Hz16000, SampleRate::Hz8000] {
        if !rates.contains(&r) {
            rates.push(r);
        }
    }
    for call in rates {
        let mut sc = *session;
        sc.call_rate = call;
        sc.agent_rate = agent_rate.unwrap_or_else(|| agent_rate_for(call));
        run_one(sc);
    }
}

/// One session: caller speech in (a voiced, syllable-modulated tone), read by the "agent", which
/// writes it back as a reply; the frames it sends are polled out as the media loop would.
/// Returns the reply frames sent.
fn run_one(sc: SessionConfig) -> u32 {
    let Ok((mut session, mut link)) = Session::new(sc) else {
        return 0;
    };
    let mut sent = 0;
    let n = sc.call_rate.frame_samples();
    let agent_n = sc.agent_rate.frame_samples();
    let hz = sc.call_rate.hz() as f32;
    let mut frame = vec![0i16; n];
    let mut agent_buf = vec![0i16; agent_n * 4];
    let mut out = [0u8; crate::core::audio::MAX_CALL_FRAME_BYTES];
    let t0 = Instant::now();
    let mut turn = false;
    for k in 0..FRAMES {
        // Speech for the first 30 frames (600 ms), silence after.
        let speaking = k < 30;
        for (i, s) in frame.iter_mut().enumerate() {
            *s = if speaking {
                voiced((k as usize * n + i) as f32 / hz)
            } else {
                0
            };
        }
        let now = t0 + FRAME * (k + 1);
        let _ = session.handle_caller_samples(now, &frame);
        let read = link.read(&mut agent_buf);
        if read > 0 {
            if !turn {
                turn = link.start_turn().is_ok();
            }
            link.write(&agent_buf[..read]);
        }
        while session.poll_transmit(now, &mut out).is_some() {
            sent += 1;
            while session.poll_command().is_some() {}
        }
        while session.poll_event().is_some() {}
    }
    let _ = link.end_turn();
    let _ = session.poll_transmit(t0 + FRAME * FRAMES + Duration::from_secs(1), &mut out);
    sent
}

/// A voiced, syllable-modulated tone at time `t` (seconds): what the VAD takes for speech.
fn voiced(t: f32) -> i16 {
    use std::f32::consts::PI;
    let syllable = 0.6 + 0.4 * (t * 2.0 * PI * 4.0).sin();
    let voice = (t * 2.0 * PI * 180.0).sin() + 0.5 * (t * 2.0 * PI * 720.0).sin();
    (voice * syllable * 6_000.0) as i16
}

/// The loopback call's caller speech.
const CALL_SPEECH: Duration = Duration::from_millis(600);
/// Its media, hang-up included: the speech, the 500 ms end-of-turn hangover and ~0.6 s of the
/// echo agent's reply.
const CALL_MEDIA: Duration = Duration::from_millis(2_000);
/// The whole loopback call at most; a server that cannot take it starts all the same.
const CALL_DEADLINE: Duration = Duration::from_secs(6);
/// The throwaway instance's drain at most, once the call is over.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// Runs one short call through a throwaway instance of the server (`config`'s call rate,
/// session and logging, but the echo agent, in-process state, no webhook signatures and no
/// call control, so nothing outside the process is touched) on an ephemeral `127.0.0.1` port.
/// Returns whether the call got a reply. Failures are logged at debug and otherwise ignored:
/// the warm-up only saves the first real call some page faults.
pub async fn loopback_call(config: &ServerConfig) -> bool {
    let mut cfg = config.clone();
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.public_url = None;
    cfg.agent = AgentKind::Echo;
    cfg.openai = None;
    cfg.redis_url = None;
    cfg.signature_secret = None;
    cfg.api_key = None;
    cfg.signed_media_socket = false;
    cfg.media_token_key = None;
    cfg.application_id = None;
    cfg.private_key = None;
    cfg.transfer_to = None;
    cfg.max_calls = 1;
    let listener = match TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "warm-up call: no loopback listener");
            return false;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return false;
    };
    let agent: Arc<dyn Agent> = Arc::new(EchoAgent::default());
    let state = AppState::new(cfg, agent);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(%addr, "warm-up: one call through a throwaway instance");
    // Served as `server::serve` does, without its drain (nothing to drain, nothing to log).
    let (limits, metrics) = (state.config().http, state.metrics().clone());
    let server = tokio::spawn(super::connections::serve_http(
        listener,
        super::app(state),
        limits,
        metrics,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let replied = tokio::time::timeout(CALL_DEADLINE, one_call(addr))
        .await
        .unwrap_or_else(|_| {
            tracing::debug!("warm-up call: timed out");
            false
        });
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN_DEADLINE, server).await.is_err() {
        tracing::debug!("warm-up call: the throwaway server did not stop in time");
    }
    replied
}

/// Vonage's side of the loopback call (`tools::vonage_side`, as `voicegate simulate` plays it).
async fn one_call(addr: SocketAddr) -> bool {
    let Ok(server) = PlainUrl::parse(&format!("http://{addr}")) else {
        return false;
    };
    let mut id = CallIdentity::fresh();
    "voicegate-warm-up".clone_into(&mut id.from);
    let mut events = EventPoster::new(&server);
    events
        .post(&id, None, Leg::Caller, "started", Map::new())
        .await;
    let mut http = HttpClient::new(server.authority());
    let target = match vonage_side::answer(&mut http, &server, &id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "warm-up call: answer webhook failed");
            return false;
        }
    };
    drop(http);
    events
        .post(&id, None, Leg::Caller, "answered", Map::new())
        .await;
    events.set_ws_event_url(target.event_url.as_deref());
    let mut ws = match vonage_side::connect_media(&target, &AuthSettings::default()).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "warm-up call: media socket failed");
            return false;
        }
    };
    events
        .post(&id, Some(&target), Leg::Websocket, "answered", Map::new())
        .await;
    let rate = target.rate;
    let hz = rate.hz() as f32;
    let speech: Vec<i16> = (0..(rate.hz() as u128 * CALL_SPEECH.as_millis() / 1_000) as usize)
        .map(|i| voiced(i as f32 / hz))
        .collect();
    let script = CallerScript::new(rate, &speech, CALL_MEDIA);
    let silence = Bytes::from(vec![0u8; rate.frame_samples() * 2]);
    let report = vonage_side::run_media(
        &mut ws,
        &script,
        &silence,
        StopRule::After(CALL_MEDIA),
        &mut NoObserver,
    )
    .await;
    drop(ws);
    events.post_call_end(&id, &target, "completed").await;
    report.counters.frames_received > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_every_rate_pair_without_panicking() {
        let sc = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        for agent in [None, Some(SampleRate::Hz24000), Some(SampleRate::Hz48000)] {
            warm_up(&sc, SampleRate::Hz16000, agent, |r| r);
            warm_up(&sc, SampleRate::Hz8000, agent, |_| SampleRate::Hz24000);
        }
        // The synthetic caller is heard as speech and the reply goes out: the whole path ran.
        let sent = run_one(SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz24000));
        assert!(sent > 10, "{sent} reply frames");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loopback_call_gets_a_reply_and_stops_its_server() {
        let mut config = ServerConfig::new();
        // Whatever the real instance is configured with, the warm-up call stays in-process.
        config.agent = AgentKind::Bridge("ws://127.0.0.1:9/agent".to_owned());
        config.agent_rate = Some(SampleRate::Hz24000);
        assert!(loopback_call(&config).await);
    }
}
