//! Vonage's wire formats. Parsing here is pure and synchronous.

pub mod media_protocol;
