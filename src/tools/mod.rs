//! The command-line tools beside the server: each is `pub fn run(args) -> Result<..>`.

pub mod eval;
pub mod loadtest;
pub mod pipeline_args;
pub mod simulate;
pub mod vonage_side;
