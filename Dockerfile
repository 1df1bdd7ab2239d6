# The tslice image: tslice-broker, the tslice CLI, tslice-webhook and the
# shim (libtslice.so), as the Helm chart (deploy/helm/tslice) runs them.
#
#   docker build -t ghcr.io/tslice/tslice:0.1.0 .
#
# Only the product is built: no CUDA toolkit, no simulated driver.

# The shim is loaded into tenants' programs, whose images bring their own
# C library: it is built against an old glibc (manylinux2014: 2.17), so it
# loads in any glibc image from CentOS 7 and Ubuntu 18.04 on.
FROM quay.io/pypa/manylinux2014_x86_64 AS shim
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tslice-shim \
    && objdump -T target/release/libtslice.so | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1

# The daemons run in the image's own C library.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tslice-broker -p tslice-webhook \
    && mkdir -p /out/bin \
    && cp target/release/tslice-broker target/release/tslice target/release/tslice-webhook /out/bin/

FROM debian:bookworm-slim
COPY --from=build /out/bin/ /usr/bin/
COPY --from=shim /src/target/release/libtslice.so /usr/lib/tslice/libtslice.so
USER 0
ENTRYPOINT ["/usr/bin/tslice-broker"]
