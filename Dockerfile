# syntax=docker/dockerfile:1
# The wsgate image: built in a full Rust toolchain, run in a slim Debian as a
# non-root user. The build command is the one CI runs (scripts/test checks that
# the two stay the same), so the image holds the binary the tests tested.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: the manifests alone, built
# against placeholder sources (every target Cargo.toml declares must exist, the
# integration tests' included), then the placeholders removed. The layer is
# reused until Cargo.toml or Cargo.lock changes, so an edit under src/ rebuilds
# wsgate and nothing else. tests/deploy/dockerfile.rs checks the placeholders
# still cover every target.
COPY Cargo.toml Cargo.lock ./
COPY crates/wsgate-protocol/Cargo.toml crates/wsgate-protocol/
COPY crates/wsgate-bench/Cargo.toml crates/wsgate-bench/
RUN mkdir -p src tests/it tests/deploy crates/wsgate-protocol/src crates/wsgate-bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > crates/wsgate-bench/src/main.rs \
    && touch src/lib.rs tests/it/main.rs tests/deploy/main.rs \
        crates/wsgate-protocol/src/lib.rs crates/wsgate-bench/src/lib.rs \
    && cargo build --release --locked --workspace --bins \
    && rm -rf src tests crates
COPY build.rs ./
COPY src ./src
COPY tests ./tests
COPY crates ./crates
# The image has no .git, so build.rs cannot ask git for the commit that
# wsgate_build_info reports: pass it in
# (`docker build --build-arg WSGATE_BUILD_REVISION=$(git rev-parse HEAD)`, or
# the same in compose's environment); without it the revision is `unknown`.
ARG WSGATE_BUILD_REVISION
# COPY keeps the files' own modification times, which can be older than the
# placeholder build: touch them so cargo sees the real sources as new.
RUN find src crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wsgate
COPY --from=build /src/target/release/wsgate /src/target/release/wsgate-bench /usr/local/bin/
USER wsgate
# Listen on all interfaces inside the container; the host decides what to publish.
ENV WSGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
# /readyz without curl: bash's /dev/tcp is enough for a one-line HTTP probe.
HEALTHCHECK --interval=5s --timeout=3s --retries=10 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/wsgate"]
