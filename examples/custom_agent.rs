//! A custom agent in a few dozen lines: it answers every key press with that many beeps
//! (`0` gives ten), and beeps once after each thing the caller says.
//!
//! Run it with `cargo run --example custom_agent` (it takes the same flags and environment as
//! `voicegate serve`, e.g. `-- --listen 127.0.0.1:3000 --rate 16000`), point a Vonage
//! application at it as `voicegate` prints, call the number and press some keys. You should hear
//! short 880 Hz beeps; talking over them stops them (barge-in).

use std::sync::Arc;

use clap::Parser;
use voicegate::agent::{Agent, AgentError, AgentEvent, AgentIo, BoxFuture, CallInfo};
use voicegate::core::SampleRate;
use voicegate::server::{self, AppState, ServeArgs, ServerConfig};

#[derive(Debug)]
struct Beeper;

impl Agent for Beeper {
    fn agent_rate(&self, _call_rate: SampleRate) -> SampleRate {
        SampleRate::Hz16000
    }

    fn start(&self, call: CallInfo, mut io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
        Box::pin(async move {
            let rate = call.agent_rate.hz() as usize;
            // 150 ms of 880 Hz, then 100 ms of silence: one beep.
            let beep: Vec<i16> = (0..rate / 4)
                .map(|i| {
                    if i < rate * 15 / 100 {
                        ((i as f32 * 880.0 * std::f32::consts::TAU / rate as f32).sin() * 8_000.0)
                            as i16
                    } else {
                        0
                    }
                })
                .collect();
            let mut sink = vec![0i16; rate / 50];
            while let Some(event) = io.events.recv().await {
                let beeps = match event {
                    AgentEvent::Dtmf { digit, .. } => digit
                        .as_char()
                        .to_digit(10)
                        .map_or(1, |d| if d == 0 { 10 } else { d }),
                    AgentEvent::SpeechEnded { .. } => 1,
                    AgentEvent::Ended(_) => break,
                    _ => 0,
                };
                // We do not listen to the caller's words; keep their ring empty.
                while io.audio.read(&mut sink) > 0 {}
                if beeps == 0 {
                    continue;
                }
                io.audio.start_turn().map_err(AgentError::failed)?;
                for _ in 0..beeps {
                    if io.audio.write_all(&beep).await.is_err() {
                        return Ok(()); // the call ended while we were beeping
                    }
                }
                io.audio.end_turn().map_err(AgentError::failed)?;
            }
            Ok(())
        })
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let config = ServerConfig::try_from(Cli::parse().serve)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let state = AppState::new(config, Arc::new(Beeper));
    server::serve(listener, state, server::shutdown_signal()).await?;
    Ok(())
}
