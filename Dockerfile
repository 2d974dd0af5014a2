# Basalt as a container: the release binary on a slim Debian, run as a non-root user.
#
#   docker build -t basalt .
#   docker run -p 8080:8080 -v basalt-models:/var/lib/basalt/models basalt
#
# The binary is built for a baseline x86-64 CPU and picks its SIMD kernels at run time, so
# one image runs on every server CPU. Models are not baked in: mount a model store at
# /var/lib/basalt/models (`basalt models import` or `scripts/fetch-models` fills one).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p basalt \
    && install -m 0755 target/release/basalt /usr/local/bin/basalt

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/basalt --create-home basalt
COPY --from=build /usr/local/bin/basalt /usr/local/bin/basalt
USER 10001:10001
ENV BASALT_HOST=0.0.0.0 \
    BASALT_PORT=8080 \
    BASALT_DATA_DIR=/var/lib/basalt \
    BASALT_MODELS_DIR=/var/lib/basalt/models
WORKDIR /var/lib/basalt
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp asks /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${BASALT_PORT} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^ok' <(tail -n1 <&3)"]
ENTRYPOINT ["basalt"]
CMD ["serve"]
