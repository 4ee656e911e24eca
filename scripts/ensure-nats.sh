#!/usr/bin/env bash
# ensure-nats.sh — print a working NATS URL for local development, tests and
# CI, starting a private JetStream server (cmd/devnats) when nothing answers.
#
# Usage:
#   scripts/ensure-nats.sh            print a NATS URL
#   scripts/ensure-nats.sh --stop     stop the private devnats (if running)
#   scripts/ensure-nats.sh --status   say whether the private devnats runs
#   scripts/ensure-nats.sh --help
#
# Stdout carries exactly one line, the URL; every diagnostic goes to stderr:
#   export NATS_URL="$(scripts/ensure-nats.sh)"
#
# Candidates, first that answers wins:
#   1. $NATS_URL (any of its comma-separated servers), printed unchanged.
#   2. The system server, $SLUICE_SYSTEM_NATS_URL (default
#      nats://127.0.0.1:4222; set it to "" or "none" to skip).
#   3. The private devnats on nats://127.0.0.1:$SLUICE_NATS_PORT (default
#      54222): reused when it already answers, else built with
#      `go build -o .dev/bin/devnats ./cmd/devnats` and started in the
#      background with JetStream store .dev/nats, pid file .dev/nats.pid
#      (its port in .dev/nats.port) and log .dev/nats.log. A devnats that
#      already runs is reused on its own port. The first build may take a
#      minute.
#
# "Answers" means a TCP connect succeeds within 3 s and the server's INFO
# greeting (sent in plain text before any TLS or auth) says "jetstream":true.
# Sluice needs JetStream: a system server without it is skipped with a note;
# $NATS_URL without it is an error. That INFO flag describes the server we
# reach; in exotic setups (JetStream only in a hub behind a leafnode) set
# SLUICE_NATS_JS_CHECK=0 to accept any server that accepts TCP connections.
set -euo pipefail

PROG=ensure-nats
NATS_PORT=${SLUICE_NATS_PORT:-54222}
SYSTEM_URL=${SLUICE_SYSTEM_NATS_URL-nats://127.0.0.1:4222}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DEV=$REPO/.dev
BIN=$DEV/bin/devnats
PIDFILE=$DEV/nats.pid
PORTFILE=$DEV/nats.port
LOGFILE=$DEV/nats.log
STORE=$DEV/nats

# From here on, stdout is stderr; the URL goes to fd 3 (the real stdout).
exec 3>&1 1>&2

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# redact URL: URL without user:password@ parts, for messages.
redact() {
  # shellcheck disable=SC2001 # a regex replacement, not a simple substitution
  sed -E 's#(://)[^@/,]*@#\1***@#g' <<<"$1"
}

# tcp_answers HOST PORT: a TCP connect succeeds within 3 s.
tcp_answers() {
  local host=$1 port=$2
  host=${host#[}
  host=${host%]}
  # shellcheck disable=SC2016 # $1/$2 expand in the child bash
  timeout 3 bash -c 'exec 5<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# nats_probe HOST PORT: 0 if a NATS server with JetStream answers there,
# 2 if something answers without JetStream (or is not NATS), 1 if nothing
# answers.
nats_probe() {
  local host=$1 port=$2 info
  host=${host#[}
  host=${host%]}
  # shellcheck disable=SC2016 # $1/$2 expand in the child bash
  info=$(timeout 3 bash -c 'exec 5<>"/dev/tcp/$1/$2" && IFS= read -r line <&5 && printf "%s\n" "$line"' _ "$host" "$port" 2>/dev/null) ||
    { tcp_answers "$host" "$port" && return 2; return 1; }
  if [[ ${SLUICE_NATS_JS_CHECK:-1} == 0 ]]; then
    return 0
  fi
  if [[ $info == INFO* && $info =~ \"jetstream\":[[:space:]]*true ]]; then
    return 0
  fi
  return 2
}

# url_probe URL: nats_probe for a (comma-separated) NATS URL list: 0 if any
# server has JetStream, else 2 if any answers, else 1.
url_probe() {
  local list=$1 u host port rc best=1
  local -a urls
  IFS=, read -r -a urls <<<"$list"
  for u in "${urls[@]}"; do
    u=${u//[[:space:]]/}
    [[ -n $u ]] || continue
    u=${u#*://} # scheme (nats://, tls://, ...)
    u=${u%%/*}  # path
    u=${u##*@}  # user:password@
    if [[ $u =~ ^(\[[^]]*\]):([0-9]+)$ || $u =~ ^([^:]+):([0-9]+)$ ]]; then
      host=${BASH_REMATCH[1]}
      port=${BASH_REMATCH[2]}
    else
      host=$u
      port=4222
    fi
    [[ -n $host ]] || continue
    rc=0
    nats_probe "$host" "$port" || rc=$?
    if ((rc == 0)); then
      return 0
    fi
    if ((rc == 2)); then
      best=2
    fi
  done
  return "$best"
}

# pid_alive PID: PID runs and is not a zombie its (new) parent has yet to
# reap.
pid_alive() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat && $(</proc/"$pid"/stat) =~ ^[0-9]+\ \(.*\)\ [ZX] ]]; then
    return 1
  fi
  return 0
}

# is_devnats PID: PID is a live devnats process (not a pid recycled after a
# reboot).
is_devnats() {
  pid_alive "$1" || return 1
  if [[ -r /proc/$1/comm && $(</proc/"$1"/comm) != devnats ]]; then
    return 1
  fi
  return 0
}

# devnats_pid: the pid of our running devnats, or nothing.
devnats_pid() {
  local pid
  [[ -r $PIDFILE ]] || return 0
  pid=$(<"$PIDFILE")
  if is_devnats "$pid"; then
    printf '%s\n' "$pid"
  fi
}

# detached CMD...: run CMD in the background, in its own session, with only
# fds 0-2 open (so it can't hold a caller's pipe, e.g. the one of
# "$(ensure-nats.sh)", open); prints its pid.
detached() {
  (
    for fd in /proc/"$BASHPID"/fd/* 3 4 5 6 7 8 9; do
      fd=${fd##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
        eval "exec $fd>&-" 2>/dev/null || true
      fi
    done
    if command -v setsid >/dev/null 2>&1; then
      # Not a process group leader here, so setsid execs in place and $!
      # is the daemon's own pid.
      setsid "$@" </dev/null >>"$LOGFILE" 2>&1 &
    else
      nohup "$@" </dev/null >>"$LOGFILE" 2>&1 &
    fi
    echo "$!"
  )
}

build_devnats() {
  if ! command -v go >/dev/null 2>&1; then
    [[ -x $BIN ]] || die "go is not on PATH and $BIN was never built; install Go (see go.mod for the version)"
    log "go is not on PATH; using the existing $BIN"
    return 0
  fi
  log "building $BIN (the first build may take a minute)"
  (cd "$REPO" && go build -o "$BIN" ./cmd/devnats) || die "go build ./cmd/devnats failed"
}

start_private() {
  local url pid i rc
  if [[ ! $NATS_PORT =~ ^[0-9]+$ ]] || ((NATS_PORT < 1 || NATS_PORT > 65535)); then
    die "SLUICE_NATS_PORT=$NATS_PORT is not a port number"
  fi
  url=nats://127.0.0.1:$NATS_PORT
  mkdir -p "$DEV/bin" "$STORE"

  # Serialize concurrent callers; the lock fd is closed for the daemon.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEV/nats.lock"
    flock -w 300 9 || die "timed out waiting for the lock $DEV/nats.lock"
  fi

  # Our devnats already runs: reuse it on whatever port it was started.
  pid=$(devnats_pid)
  if [[ -n $pid ]]; then
    local running_port
    running_port=$(cat "$PORTFILE" 2>/dev/null || echo "$NATS_PORT")
    # Give a just-started (or busy) one a moment.
    for ((i = 0; i < 10; i++)); do
      nats_probe 127.0.0.1 "$running_port" && break
      sleep 0.5
    done
    if nats_probe 127.0.0.1 "$running_port"; then
      if [[ $running_port != "$NATS_PORT" ]]; then
        log "note: devnats already runs on port $running_port (not $NATS_PORT); reusing it"
      fi
      log "reusing devnats (pid $pid) on nats://127.0.0.1:$running_port"
      printf 'nats://127.0.0.1:%s\n' "$running_port" >&3
      return 0
    fi
    log "devnats pid $pid does not answer on port $running_port; restarting it"
    stop_pid "$pid"
    rm -f "$PIDFILE" "$PORTFILE"
  fi

  # Something else on our port: fine if it is a JetStream NATS (say, a
  # devnats started by hand), fatal otherwise.
  rc=0
  nats_probe 127.0.0.1 "$NATS_PORT" || rc=$?
  if ((rc == 0)); then
    log "reusing the NATS server already on $url"
    printf '%s\n' "$url" >&3
    return 0
  fi
  if ((rc == 2)); then
    die "something that is not a JetStream-enabled NATS listens on 127.0.0.1:$NATS_PORT; free it or set SLUICE_NATS_PORT"
  fi

  build_devnats # before the wait: the first build is slow
  log "starting devnats on $url (store $STORE, log $LOGFILE)"
  pid=$(detached "$BIN" -addr "127.0.0.1:$NATS_PORT" -store "$STORE")
  printf '%s\n' "$pid" >"$PIDFILE"
  printf '%s\n' "$NATS_PORT" >"$PORTFILE"

  for ((i = 0; i < 120; i++)); do # 30 s
    if nats_probe 127.0.0.1 "$NATS_PORT"; then
      log "devnats (pid $pid) is ready"
      printf '%s\n' "$url" >&3
      return 0
    fi
    if ! pid_alive "$pid"; then # not is_devnats: it may not have exec'd yet
      break
    fi
    sleep 0.25
  done
  log "devnats did not come up; last lines of $LOGFILE:"
  tail -n 20 "$LOGFILE" >&2 || true
  if pid_alive "$pid"; then
    stop_pid "$pid"
  fi
  rm -f "$PIDFILE" "$PORTFILE"
  die "could not start devnats on $url (is the port taken? try SLUICE_NATS_PORT=...)"
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 40; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.25
  done
  log "devnats pid $pid ignored SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

stop_private() {
  local pid
  pid=$(devnats_pid)
  if [[ -z $pid ]]; then
    log "devnats is not running"
    rm -f "$PIDFILE" "$PORTFILE"
    return 0
  fi
  stop_pid "$pid"
  rm -f "$PIDFILE" "$PORTFILE"
  log "stopped devnats (pid $pid)"
}

status_private() {
  local pid
  pid=$(devnats_pid)
  if [[ -z $pid ]]; then
    log "devnats is not running"
    return 1
  fi
  log "devnats runs (pid $pid) on nats://127.0.0.1:$(cat "$PORTFILE" 2>/dev/null || echo '?'); see $LOGFILE"
}

main() {
  case ${1:-} in
  -h | --help)
    usage >&3
    return 0
    ;;
  --stop)
    stop_private
    return
    ;;
  --status)
    status_private
    return
    ;;
  "") ;;
  *) die "unknown argument $1 (see --help)" ;;
  esac

  local rc

  # 1. $NATS_URL
  if [[ -n ${NATS_URL:-} ]]; then
    rc=0
    url_probe "$NATS_URL" || rc=$?
    case $rc in
    0)
      log "using NATS_URL"
      printf '%s\n' "$NATS_URL" >&3
      return 0
      ;;
    2) die "NATS_URL=$(redact "$NATS_URL") answers but has no JetStream (start nats-server with -js; SLUICE_NATS_JS_CHECK=0 skips this check)" ;;
    esac
    log "NATS_URL=$(redact "$NATS_URL") does not answer; trying the next candidate"
  fi

  # 2. The system server.
  if [[ -n $SYSTEM_URL && $SYSTEM_URL != none ]]; then
    rc=0
    url_probe "$SYSTEM_URL" || rc=$?
    case $rc in
    0)
      log "using the system NATS at $(redact "$SYSTEM_URL")"
      printf '%s\n' "$SYSTEM_URL" >&3
      return 0
      ;;
    2) log "the system NATS at $(redact "$SYSTEM_URL") has no JetStream; skipping it" ;;
    esac
  fi

  # 3. The private devnats.
  start_private
}

main "$@"
