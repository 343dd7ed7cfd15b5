#![doc = include_str!("../docs/architecture.md")]
#![warn(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod agent;
pub mod core;
pub mod corpus;
#[doc(hidden)]
pub mod fuzzing;
pub mod server;
pub mod tools;
pub mod vonage;
