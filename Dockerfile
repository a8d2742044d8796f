# syntax=docker/dockerfile:1
#
# The `entitlements` binary in a small, non-root runtime image.
#
#   docker build -t entitlements:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 entitlements:0.1.0            # SQLite, example catalog
#   docker run --rm -e ENTITLEMENTS_DATABASE_URL=postgres://… entitlements:0.1.0 migrate
#
# The Helm chart (helm/entitlements) runs this image with a read-only root filesystem as uid 65532.

# ---------------------------------------------------------------- build
FROM rust:1 AS builder
WORKDIR /src
# The proto is compiled by the pure-Rust `protox` (build.rs) and SQLite is bundled, so the
# stock Rust image needs nothing else (no protoc, no OpenSSL: TLS is rustls).
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin entitlements \
 && install -D -m 0755 target/release/entitlements /out/usr/local/bin/entitlements \
 && install -D -m 0644 examples/catalog.toml /out/etc/entitlements/catalog.toml \
 && mkdir -p /out/var/lib/entitlements

# ---------------------------------------------------------------- runtime
# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager; `nonroot`
# runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/usr/local/bin/entitlements /usr/local/bin/entitlements
COPY --from=builder /out/etc/entitlements/catalog.toml /etc/entitlements/catalog.toml
# The working directory holds the SQLite file of a standalone run (the default database URL is
# the relative path `entitlements.db`); a Kubernetes deployment uses PostgreSQL instead.
COPY --from=builder --chown=65532:65532 /out/var/lib/entitlements /var/lib/entitlements
WORKDIR /var/lib/entitlements
USER 65532:65532
# Listen on every interface inside the container (the binary's own defaults are loopback).
ENV ENTITLEMENTS_CATALOG=/etc/entitlements/catalog.toml \
    ENTITLEMENTS_GRPC_ADDR=0.0.0.0:50051 \
    ENTITLEMENTS_HTTP_ADDR=0.0.0.0:8080 \
    ENTITLEMENTS_LOG_FORMAT=json
# gRPC (EntitlementService, AdminService, grpc.health.v1, reflection) and HTTP (/healthz,
# /readyz, /metrics, /webhooks/stripe).
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/entitlements"]
CMD ["serve"]
