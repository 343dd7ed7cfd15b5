//! Vonage's wire formats. Parsing here is pure and synchronous; only the REST client does IO.

pub mod app_jwt;
pub mod client;
pub mod media_protocol;
pub mod ncco;
pub mod signed_webhook;
pub mod webhooks;
