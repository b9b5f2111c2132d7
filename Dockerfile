# syntax=docker/dockerfile:1
# glance-gateway image: build with the Rust toolchain, run on Debian slim as an unprivileged user.
#   docker build -t glance-gateway .
#   docker run -v ./gateway.toml:/etc/glance-gateway/gateway.toml:ro -p 9292:9292 glance-gateway

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY stores stores
# Cache mounts keep the registry and target/ between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
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
EXPOSE 9292
ENTRYPOINT ["glance-gateway"]
CMD ["serve", "--config", "/etc/glance-gateway/gateway.toml"]
