# Multi-stage build: compile with the Rust toolchain, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY migrations migrations
COPY benches benches
RUN cargo build --release --locked --bin trackhub

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/trackhub /usr/local/bin/trackhub
ENV TRACKHUB_ADDR=0.0.0.0:8080 TRACKHUB_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["trackhub"]
CMD ["serve"]
