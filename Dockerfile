# syntax=docker/dockerfile:1
# The brokertoken daemon: a static binary on distroless (no shell, no package manager),
# running as an unprivileged user.
#
#   docker build -t brokertoken .
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) -t brokertoken .
#
# Without the build arguments, version and commit come from the .git directory of the
# build context (see deploy/build.sh).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# The checkout may belong to another user than the build's root: let git read it, so
# the Go toolchain can record the commit.
RUN git config --global --add safe.directory /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG COMMIT=""
RUN VERSION="$VERSION" COMMIT="$COMMIT" sh deploy/build.sh /out/brokertoken

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/brokertoken /usr/local/bin/brokertoken
# nonroot (65532); no shell in this image, so ENTRYPOINT is in exec form.
USER 65532:65532
ENV BROKERTOKEN_LISTEN=:9464 \
    BROKERTOKEN_LOG_FORMAT=json
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/brokertoken"]
CMD ["run"]
