# syntax=docker/dockerfile:1
# glance-gateway image: build with the Rust toolchain, run on Debian slim as an unprivileged user.
#   docker build --build-arg GLANCE_GATEWAY_COMMIT=$(git rev-parse --short=12 HEAD) -t glance-gateway .
#   docker run -v ./gateway.toml:/etc/glance-gateway/gateway.toml:ro -p 9292:9292 glance-gateway
# The gateway runs as PID 1 and handles SIGTERM itself (drain, then exit 0): give `docker stop`
# a timeout longer than the config's shutdown_timeout (default 30 s), e.g. `docker stop -t 45`.

FROM rust:1.95-slim-bookworm AS build
# The build context has no .git: the commit for `--version` comes in as a build argument.
ARG GLANCE_GATEWAY_COMMIT=unknown
WORKDIR /src
# OpenSSL (the multihash) is built from source: its build wants make and perl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make perl \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY stores stores
# Cache mounts keep the registry and target/ between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    GLANCE_GATEWAY_COMMIT="$GLANCE_GATEWAY_COMMIT" \
    cargo build --release --locked --bin glance-gateway \
    && cp target/release/glance-gateway /usr/local/bin/glance-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/glance-gateway gateway \
    && mkdir -p /etc/glance-gateway /var/lib/glance-gateway \
    && chown gateway:gateway /var/lib/glance-gateway
COPY --from=build /usr/local/bin/glance-gateway /usr/local/bin/glance-gateway
USER gateway
WORKDIR /var/lib/glance-gateway
# Every subcommand (serve, healthcheck, check-config) reads this file unless --config says otherwise.
ENV GLANCE_GATEWAY_CONFIG=/etc/glance-gateway/gateway.toml
# 9292: the API. 9293: the admin listener (metrics); bind it with admin_bind = "0.0.0.0:9293"
# to reach it from outside the container, and publish it only where tenants cannot reach.
EXPOSE 9292 9293
STOPSIGNAL SIGTERM
# No curl in the image: the binary asks its own /healthcheck.
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["glance-gateway", "healthcheck"]
ENTRYPOINT ["glance-gateway"]
CMD ["serve"]
