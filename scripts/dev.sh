#!/usr/bin/env bash
# dev.sh — `make run`: bring the whole Sluice stack up on this machine and keep it in the
# foreground until Ctrl-C.
#
# It uses $DATABASE_URL / $NATS_URL (or the machine's own Postgres and NATS) when they
# answer, and otherwise starts a private Postgres cluster and an embedded NATS JetStream
# (scripts/ensure-postgres.sh, scripts/ensure-nats.sh). It then builds and starts the worker
# (which applies migrations) and the ingress, seeds the built-in `fake` model channel and a
# dev API key (kept in .dev/), and prints a curl that returns a completion. Ctrl-C (or
# SIGTERM) stops the ingress and the worker and exits 0; Postgres and NATS keep running.
#
# Environment: SLUICE_HTTP_PORT (default 8080), SLUICE_WORKER_PORT (default 9090);
# SLUICE_DEV_DIR, where the dev secrets, binaries and logs live (default <repo>/.dev); with
# DATABASE_URL set, its own database is used (else `sluice`). Every variable the binaries
# read (README) is passed through. .dev/admin-token always holds the token the ingress
# takes, so `Authorization: Bearer $(cat .dev/admin-token)` works.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
dev=${SLUICE_DEV_DIR:-$repo/.dev}
mkdir -p "$dev/bin"

http_port=${SLUICE_HTTP_PORT:-8080}
worker_port=${SLUICE_WORKER_PORT:-9090}

log() { printf '==> %s\n' "$*" >&2; }

log "finding or starting Postgres"
if [ -n "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/ensure-postgres.sh) # keeps the database DATABASE_URL names
else
  DATABASE_URL=$(scripts/ensure-postgres.sh sluice)
fi
log "finding or starting NATS JetStream"
NATS_URL=$(scripts/ensure-nats.sh)
export DATABASE_URL NATS_URL

# Secrets for this dev stack, made once and kept in .dev/ (git-ignored).
secret_file() { # name bytes
  local f="$dev/$1"
  if [ ! -s "$f" ]; then
    (umask 077 && head -c "$2" /dev/urandom | base64 | tr -d '\n' >"$f")
  fi
  cat "$f"
}
SLUICE_ENCRYPTION_KEY=${SLUICE_ENCRYPTION_KEY:-$(secret_file encryption-key 32)}
# .dev/admin-token always holds exactly the token the ingress takes. A token from the
# environment is written there as it is. A generated one is made URL-safe (no '+' or '/')
# and stored in that form; a file written by an older dev.sh, which stored the token
# before that translation while the ingress got the translated one, is rewritten.
if [ -n "${SLUICE_ADMIN_TOKEN:-}" ]; then
  (umask 077 && printf '%s' "$SLUICE_ADMIN_TOKEN" >"$dev/admin-token")
else
  SLUICE_ADMIN_TOKEN=$(secret_file admin-token 24)
  if [ "$SLUICE_ADMIN_TOKEN" != "$(printf '%s' "$SLUICE_ADMIN_TOKEN" | tr '+/' '-_')" ]; then
    SLUICE_ADMIN_TOKEN=$(printf '%s' "$SLUICE_ADMIN_TOKEN" | tr '+/' '-_')
    (umask 077 && printf '%s' "$SLUICE_ADMIN_TOKEN" >"$dev/admin-token")
  fi
fi
export SLUICE_ENCRYPTION_KEY SLUICE_ADMIN_TOKEN
export INGRESS_ADDR=${INGRESS_ADDR:-127.0.0.1:$http_port}
export WORKER_ADDR=${WORKER_ADDR:-127.0.0.1:$worker_port}

log "building ingress and worker"
go build -o "$dev/bin/ingress" ./cmd/ingress
go build -o "$dev/bin/worker" ./cmd/worker

log "applying migrations"
"$dev/bin/worker" migrate >&2

pids=()
stop() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    log "stopping ingress and worker"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
# A requested stop (Ctrl-C, SIGTERM) is a clean exit; any other exit stops the children too.
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$dev/bin/worker" >"$dev/worker.log" 2>&1 &
pids+=($!)
"$dev/bin/ingress" >"$dev/ingress.log" 2>&1 &
pids+=($!)

base="http://127.0.0.1:$http_port"
for _ in $(seq 1 150); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$worker_port/readyz" >/dev/null 2>&1; then
    break
  fi
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      log "a process exited at start; its log:"
      tail -n 20 "$dev/worker.log" "$dev/ingress.log" >&2
      exit 1
    fi
  done
  sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null || { log "ingress not ready; see $dev/ingress.log"; exit 1; }

admin() { # method path [json]
  curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $SLUICE_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' ${3:+--data "$3"}
}

if ! admin GET /admin/v1/channels | grep -q '"name":"fake"'; then
  log "seeding the built-in fake model channel (model fake-model)"
  admin POST /admin/v1/channels \
    '{"name":"fake","provider":"fake","base_url":"fake://?latency=20ms&token_latency=10ms","models":["fake-model"]}' >/dev/null
  admin PUT /admin/v1/prices/fake-model '{"input_usd_per_1m":1,"output_usd_per_1m":2}' >/dev/null
fi

key=""
if [ -s "$dev/dev-key" ]; then
  key=$(cat "$dev/dev-key")
  if ! curl -fsS "$base/v1/models" -H "Authorization: Bearer $key" >/dev/null 2>&1; then
    key=""
  fi
fi
if [ -z "$key" ]; then
  log "creating a dev API key"
  key=$(admin POST /admin/v1/keys '{"name":"dev"}' | sed -n 's/.*"key":"\(sk-sl-[^"]*\)".*/\1/p')
  (umask 077 && printf '%s' "$key" >"$dev/dev-key")
fi

cat <<MSG

Sluice is up: ingress $base, worker ops http://127.0.0.1:$worker_port (logs in $dev/*.log).
Postgres: $(printf '%s' "$DATABASE_URL" | sed 's#//[^@]*@#//…@#')   NATS: $NATS_URL
Admin token: $dev/admin-token    Dev API key: $dev/dev-key

Try it:

  curl $base/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
    -d '{"model":"fake-model","messages":[{"role":"user","content":"Hello, Sluice!"}]}'

Streaming: add "stream": true. The Responses API, Messages and embeddings answer too, e.g.:

  curl $base/v1/responses \\
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
    -d '{"model":"fake-model","input":"Hello, Sluice!"}'

Press Ctrl-C to stop.
MSG

wait -n "${pids[@]}" || true
log "a process exited; see $dev/worker.log and $dev/ingress.log"
exit 1
