# Sluice images: one image holds every binary; docker-compose.yml picks one
# per service with `command`.
#
#   docker build -t sluice .
#   docker run --rm sluice /app/worker migrate        # apply migrations
#   docker run --rm -p 8080:8080 sluice /app/ingress
#
# Binaries in /app: ingress (API, :8080), worker (:9090 health/metrics;
# `worker migrate` applies migrations), fakeupstream (a fake LLM upstream for
# demos and load tests). The runtime image is distroless (no shell, curl or
# wget): health checks run `/app/<binary> healthcheck`, which GETs the local
# /readyz endpoint and exits 0 or 1.

FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local

# Dependencies first, so code changes don't re-download modules.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .
# BuildKit (the default builder) keeps the compile cache between builds.
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/ingress ./cmd/worker ./cmd/fakeupstream

FROM gcr.io/distroless/static-debian12:nonroot
WORKDIR /app
COPY --from=build /out/ /app/
USER nonroot:nonroot
EXPOSE 8080 9090
# No ENTRYPOINT: docker-compose.yml (or `docker run IMAGE /app/<binary>`)
# chooses the binary.
CMD ["/app/ingress"]
