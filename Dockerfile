# voicegate: a slim, non-root image of `voicegate serve`.
#
#   docker build -t voicegate .
#   docker run --rm -p 3000:3000 -e VOICEGATE_PUBLIC_URL=https://your.host voicegate
#
# Two stages: the build (Rust on Debian bookworm; no OpenSSL: TLS is rustls with ring) and the
# runtime (debian:bookworm-slim with CA certificates for the Vonage REST API, a non-root user,
# nothing else). BuildKit cache mounts keep the dependency build between runs. The process
# handles SIGTERM itself (drain, then exit 0), so it can run as PID 1.

# ---- build
FROM rust:1.88-slim-bookworm AS build
WORKDIR /src
# webrtc-vad and ring compile C; the slim Rust image already has gcc and libc6-dev.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
# Release build without debug info, stripped: the image carries only the binary.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin voicegate \
    && cp target/release/voicegate /usr/local/bin/voicegate

# ---- runtime
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin voicegate
COPY --from=build /usr/local/bin/voicegate /usr/local/bin/voicegate
USER 10001:10001
# Listen on every interface inside the container; JSON logs for a log collector.
ENV VOICEGATE_LISTEN=0.0.0.0:3000 \
    VOICEGATE_LOG_FORMAT=json
EXPOSE 3000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/voicegate"]
CMD ["serve"]
