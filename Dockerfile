# patchtrail in a container: build with the Rust toolchain, run on a slim Debian.
#   docker build -t patchtrail .
#   docker run --rm patchtrail --help
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin patchtrail \
 && cp target/release/patchtrail /usr/local/bin/patchtrail

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home patchtrail \
 && mkdir /lake && chown patchtrail /lake
COPY --from=build /usr/local/bin/patchtrail /usr/local/bin/patchtrail
USER patchtrail
VOLUME ["/lake"]
ENTRYPOINT ["patchtrail"]
CMD ["--help"]
