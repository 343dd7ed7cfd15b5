//! Runs the evaluation without the CLI (same code as `voicegate eval`).
//!
//! `cargo run --release --example eval -- --manifest ../shared/corpus/manifest.json [--json]`
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: voicegate::tools::eval::EvalArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    voicegate::tools::eval::run(&Cli::parse().args)
}
