# deployer's own image: the CLI in an empty image, to run it as a Cloud Run Job (e.g. a scheduled
# `deployer health`) or in CI. Nothing can be pulled on the build machines, so the image is built
# FROM scratch from a static binary prepared on the host:
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#       cargo build --release --bin deployer --target x86_64-unknown-linux-gnu
#   mkdir -p target/image
#   cp target/x86_64-unknown-linux-gnu/release/deployer target/image/deployer
#   cp /etc/ssl/certs/ca-certificates.crt target/image/ca-certificates.crt   # TLS to Google APIs
#   docker build -t deployer .
#
# deploy/build-image.sh [TAG] runs these commands (tests/health_image.rs uses it).
#
# The service definitions and runbooks of this repository are baked in at /workspace.
FROM scratch
COPY target/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY target/image/deployer /deployer
COPY services /workspace/services
COPY runbooks /workspace/runbooks
# Service files name their Dockerfile and build context; validation checks they exist.
COPY examples/hello/Dockerfile /workspace/examples/hello/Dockerfile
ENV DEPLOYER_SERVICES_DIR=/workspace/services \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CI=true
WORKDIR /workspace
ENTRYPOINT ["/deployer"]
CMD ["services", "list"]
