//! [`Wire`]: an agent socket driven from one task without ever waiting on it: a bounded queue
//! of outgoing messages that is flushed as the socket accepts them, and reads, both polled from
//! one future ([`Wire::io`]) that can sit in a `select!` next to the call's events.
//!
//! The adapters write their messages through [`Wire::text_with`] and [`Wire::binary_samples`],
//! which build them in one recycled [`BytesMut`] arena (the media task's trick): once the socket
//! has taken earlier messages and dropped them, `reserve` reclaims the memory, so a steady stream
//! of frames and small events allocates nothing here.
//!
//! The queue's bound is the adapters' business ([`Wire::queued`]): they stop producing while it is
//! long, which backs up into the bounded rings and queues before it, where drops are counted.
//! A socket that stops taking messages altogether shows as [`Wire::stalled_since`].
//!
//! Real-time: no allocation per message in steady state (tungstenite's own buffers are reused).

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Sink, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::connect::AgentSocket;

/// Size of the message arena; it grows if a burst needs more.
const ARENA_BYTES: usize = 32 * 1024;

/// What one turn of [`Wire::io`] brought.
#[derive(Debug)]
pub enum Io {
    /// A message from the peer.
    Message(Message),
    /// Queued messages went out; there may be room for more.
    Progress,
    /// The peer closed the socket (with its close frame, if it sent one), or the connection
    /// ended.
    Closed(Option<CloseFrame>),
    /// The socket failed (including a message over the size limit:
    /// [`tungstenite::Error::Capacity`]).
    Error(tungstenite::Error),
}

/// One agent socket with its outgoing queue.
pub struct Wire {
    ws: AgentSocket,
    out: VecDeque<Message>,
    arena: BytesMut,
    /// Messages were handed to the socket and not flushed yet.
    unflushed: bool,
    /// When the queue last moved (or became non-empty).
    last_progress: Instant,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("queued", &self.out.len())
            .field("unflushed", &self.unflushed)
            .finish()
    }
}

impl Wire {
    /// Drives `ws`; the queue starts with room for `capacity` messages.
    pub fn new(ws: AgentSocket, capacity: usize) -> Self {
        Self {
            ws,
            out: VecDeque::with_capacity(capacity),
            arena: BytesMut::with_capacity(ARENA_BYTES),
            unflushed: false,
            last_progress: Instant::now(),
        }
    }

    /// Messages queued and not yet handed to the socket.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing is queued or waiting to be flushed.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && !self.unflushed
    }

    /// Since when queued messages have been waiting without the socket taking any, if they
    /// are.
    pub fn stalled_since(&self) -> Option<Instant> {
        (!self.is_idle()).then_some(self.last_progress)
    }

    fn push(&mut self, msg: Message) {
        if self.is_idle() {
            self.last_progress = Instant::now();
        }
        self.out.push_back(msg);
    }

    /// Queues a text message written by `write` into the arena (`hint`: its usual size). Writing
    /// nothing queues nothing.
    pub fn text_with(
        &mut self,
        hint: usize,
        write: impl FnOnce(&mut BytesMut) -> fmt::Result,
    ) -> fmt::Result {
        self.arena.reserve(hint);
        let r = write(&mut self.arena);
        let bytes = self.arena.split().freeze();
        r?;
        if bytes.is_empty() {
            return Ok(());
        }
        // Everything written through `fmt::Write` is UTF-8, so this cannot fail.
        let text = Utf8Bytes::try_from(bytes).map_err(|_| fmt::Error)?;
        self.push(Message::Text(text));
        Ok(())
    }

    /// Queues a text message that is already built (rare messages: `start`, set-up).
    pub fn text(&mut self, text: String) {
        self.push(Message::text(text));
    }

    /// Queues `samples` as one binary message of L16 little-endian bytes.
    pub fn binary_samples(&mut self, samples: &[i16]) {
        self.arena.reserve(samples.len() * 2);
        for s in samples {
            self.arena.extend_from_slice(&s.to_le_bytes());
        }
        let bytes = self.arena.split().freeze();
        self.push(Message::Binary(bytes));
    }

    /// Hands queued messages to the socket as it accepts them and, when `read`, waits for the
    /// next incoming one. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn io(&mut self, read: bool) -> Io {
        poll_fn(|cx| self.poll_io(cx, read)).await
    }

    fn poll_io(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Io> {
        let mut moved = false;
        while !self.out.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(msg) = self.out.pop_front() else {
                        break;
                    };
                    if let Err(e) = Pin::new(&mut self.ws).start_send(msg) {
                        return Poll::Ready(Io::Error(e));
                    }
                    self.unflushed = true;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Io::Error(e)),
                Poll::Pending => break,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Io::Error(e)),
                Poll::Pending => {}
            }
        }
        if moved {
            self.last_progress = Instant::now();
        }
        if read {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                    return Poll::Ready(Io::Closed(frame));
                }
                Poll::Ready(Some(Ok(msg))) => return Poll::Ready(Io::Message(msg)),
                Poll::Ready(Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )))
                | Poll::Ready(None) => return Poll::Ready(Io::Closed(None)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Io::Error(e)),
                Poll::Pending => {}
            }
        }
        if moved || (!read && self.is_idle()) {
            return Poll::Ready(Io::Progress);
        }
        Poll::Pending
    }

    /// Sends what is queued, then a close frame with `code` and `reason`, and waits (at most
    /// `within` in all) for the peer's close. Errors do not matter any more at this point.
    pub async fn close(&mut self, code: u16, reason: &str, within: Duration) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(truncate(reason, 120)),
        };
        let deadline = Instant::now() + within;
        let _ = tokio::time::timeout_at(deadline, async {
            while !self.is_idle() {
                if let Io::Error(_) | Io::Closed(_) = self.io(false).await {
                    return;
                }
            }
            if futures_util::SinkExt::send(&mut self.ws, Message::Close(Some(frame)))
                .await
                .is_err()
            {
                return;
            }
            // Read until the peer's close (or anything final).
            while let Io::Message(_) | Io::Progress = self.io(true).await {}
        })
        .await;
    }

    /// Sends a close frame right away, dropping anything queued (after a protocol violation),
    /// and waits at most `within` for the peer's close.
    pub async fn abort(&mut self, code: u16, reason: &str, within: Duration) {
        self.out.clear();
        self.close(code, reason, within).await;
    }
}

/// `s` cut to at most `max` bytes on a character boundary (close reasons are limited to 123).
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
