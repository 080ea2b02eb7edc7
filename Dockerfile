# The operator's image: a release build in a small image that runs as a non-root user.
#
#   docker build -t REGISTRY/summit-config:TAG .        (or podman build, buildah bud)
#
# The base images are build arguments, so a registry mirror or a local base can stand
# in for the public ones. `make image` builds offline: it compiles on the host and
# passes BINARY_FROM=prebuilt, which takes target/image/summit-config from the context.
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=build

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY migrations migrations
RUN cargo build --release --locked --bin summit-config \
 && cp target/release/summit-config /summit-config

FROM scratch AS prebuilt
COPY target/image/summit-config /summit-config

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE}
COPY --from=binary /summit-config /usr/local/bin/summit-config
# distroless's nonroot user; any non-root uid works, the chart's securityContext sets one.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/summit-config"]
CMD ["operator"]
