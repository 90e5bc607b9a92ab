# syntax=docker/dockerfile:1
# kiln serve in a container: a Rust builder stage and a small Debian runtime stage.
#
#   docker build -t kiln .
#   docker run --rm -p 8080:8080 -v "$PWD/experiments/mnist-cnn/<run>:/models/model:ro" kiln
#
# The model (a run directory or an artifact directory) is mounted at /models/model; other
# paths or settings go in the command, e.g. `... kiln serve --model /models/other
# --config /etc/kiln/serve.toml --addr 0.0.0.0:8080 --log-json`. KILN_ADMIN_KEY turns the
# admin routes on (`-e KILN_ADMIN_KEY=...`); they answer 403 without it.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Every workspace member's manifest is needed to resolve the workspace; only `kiln` is built.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
COPY examples examples
# Cache mounts keep the registry and burn's compiled dependencies between builds (a cold
# build compiles burn: many minutes); the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kiln \
    && install -D -m 0755 target/release/kiln /out/kiln

FROM debian:bookworm-slim AS runtime
# The health check needs an HTTP client. busybox's wget is ~1 MB with no TLS or other
# libraries; curl would add libcurl and a dozen shared libraries (Kerberos, LDAP, SSH...)
# to fetch one plain-HTTP URL on the loopback. kiln links nothing beyond glibc and libgcc,
# which the slim image has. procps brings kill(1), which `kiln sweep` uses to pass Ctrl-C or
# SIGTERM on to its trials so they save a checkpoint.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends busybox procps \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kiln \
    && useradd --system --uid 10001 --gid kiln --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin kiln \
    && mkdir -p /models
COPY --from=builder /out/kiln /usr/local/bin/kiln
# A numeric user, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
# /healthz is liveness (the process answers); /readyz is for load balancers. If TLS is turned
# on in the serve config, change this to https (busybox wget has no TLS: use curl then).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["kiln"]
CMD ["serve", "--model", "/models/model", "--addr", "0.0.0.0:8080"]
