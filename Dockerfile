# The tslice image: tslice-broker, the tslice CLI, tslice-webhook and the
# shim (libtslice.so), as the Helm chart (deploy/helm/tslice) runs them.
#
#   docker build -t ghcr.io/tslice/tslice:0.1.0 .
#
# Only the product is built: no CUDA toolkit, no simulated driver.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p tslice-broker -p tslice-shim -p tslice-webhook \
    && mkdir -p /out/bin /out/lib \
    && cp target/release/tslice-broker target/release/tslice target/release/tslice-webhook /out/bin/ \
    && cp target/release/libtslice.so /out/lib/

FROM debian:bookworm-slim
# The shim is loaded into tenants' programs from the node (the DaemonSet's
# init container copies it there); the binaries need only glibc.
COPY --from=build /out/bin/ /usr/bin/
COPY --from=build /out/lib/libtslice.so /usr/lib/tslice/libtslice.so
USER 0
ENTRYPOINT ["/usr/bin/tslice-broker"]
