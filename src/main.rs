//! `voicegate`: the command line. `voicegate` alone is `voicegate serve`.
//!
//! Not real-time.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voicegate::server::{self, ServeArgs, ServerConfig, config::LogFormat};

/// Put voice-AI agents on real phone calls through the Vonage Voice API.
#[derive(Debug, Parser)]
#[command(
    name = "voicegate",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` flags, accepted without the subcommand too.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: webhooks, media WebSocket, metrics (the default).
    Serve(Box<ServeArgs>),
    /// Play Vonage's side of one call against a running server.
    Simulate(Box<voicegate::tools::simulate::SimulateArgs>),
    /// Many simulated calls at once, with a report.
    Loadtest(Box<voicegate::tools::loadtest::LoadtestArgs>),
    /// Run the core pipeline over a labelled corpus manifest, with a report.
    Eval(Box<voicegate::tools::eval::EvalArgs>),
    /// Create an outbound call through the Vonage REST API, connected to this server.
    Call(Box<CallArgs>),
}

/// `voicegate call TO [--from NUMBER]`: dials `TO` through the Vonage REST API; when the callee
/// answers, the call is connected to this server's media socket (the server must be running and
/// reachable at --public-url). Prints the new call's uuid.
#[derive(Debug, clap::Args)]
struct CallArgs {
    /// The number to call (E.164; `+`, spaces and dashes are accepted).
    to: String,
    /// Caller id: a Vonage number of the account (default: a random number of the account).
    #[arg(long)]
    from: Option<String>,
    /// Put the NCCO in the request (connect straight to the media socket) instead of pointing
    /// answer_url at our /answer. Needs the running server's --media-token-key: the socket URI
    /// carries a media token minted here.
    #[arg(long)]
    inline_ncco: bool,
    /// The server flags: keys (--application-id, --private-key), --api-url, --public-url, --rate.
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        None => cli.serve,
        Some(Command::Serve(a)) => *a,
        Some(Command::Eval(a)) => {
            return match voicegate::tools::eval::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("voicegate eval: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Simulate(a)) => {
            return match voicegate::tools::simulate::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("voicegate simulate: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Loadtest(a)) => {
            return match voicegate::tools::loadtest::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("voicegate loadtest: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Call(a)) => return call(*a),
    };
    serve(args)
}

/// `voicegate call`: creates the call, prints its uuid on stdout.
fn call(args: CallArgs) -> ExitCode {
    use voicegate::server::call_control::{
        OutboundNcco, RestConfigError, client_from_config, outbound_call,
    };
    let config = match ServerConfig::try_from(args.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voicegate call: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let mode = if args.inline_ncco {
        OutboundNcco::Inline
    } else {
        OutboundNcco::AnswerUrl
    };
    let prepared = client_from_config(&config)
        .and_then(|c| c.ok_or(RestConfigError::Missing))
        .and_then(|client| {
            Ok((
                client,
                outbound_call(&config, &args.to, args.from.as_deref(), mode)?,
            ))
        });
    let (client, body) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("voicegate call: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voicegate call: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(client.create_call(&body)) {
        Ok(created) => {
            println!("{}", created.uuid);
            eprintln!(
                "call {} {} (conversation {})",
                created.uuid,
                created.status.as_ref().map_or("created", |s| s.as_str()),
                created.conversation_uuid.as_deref().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("voicegate call: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Before any thread: may re-execute the process with glibc's thread cache off.
    server::heap::without_thread_cache();
    let config = match ServerConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voicegate: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voicegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voicegate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["voicegate", "--rate", "8000"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.serve.rate, 8000);
        let c = Cli::try_parse_from(["voicegate", "serve", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(c.command, Some(Command::Serve(_))));
        assert!(matches!(
            Cli::try_parse_from(["voicegate", "eval", "--manifest", "m.json", "--json"])
                .unwrap()
                .command,
            Some(Command::Eval(_))
        ));
        assert!(Cli::try_parse_from(["voicegate", "eval"]).is_err());
        let c = Cli::try_parse_from([
            "voicegate",
            "call",
            "+447700900000",
            "--from",
            "447700900123",
            "--public-url",
            "https://gw.example.com",
        ])
        .unwrap();
        let Some(Command::Call(a)) = c.command else {
            panic!("call parses")
        };
        assert_eq!(a.to, "+447700900000");
        assert_eq!(a.from.as_deref(), Some("447700900123"));
        assert_eq!(
            a.serve.public_url.as_deref(),
            Some("https://gw.example.com")
        );
        assert!(Cli::try_parse_from(["voicegate", "call"]).is_err());
    }
}
