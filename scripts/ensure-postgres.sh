#!/usr/bin/env bash
# ensure-postgres.sh — print a working PostgreSQL URL for local development,
# tests and CI, starting a private cluster when nothing else answers.
#
# Usage:
#   scripts/ensure-postgres.sh [DBNAME]   print a URL for database DBNAME
#                                         (default: sluice), creating it if missing
#   scripts/ensure-postgres.sh --stop     stop the private cluster (if running)
#   scripts/ensure-postgres.sh --status   say whether the private cluster runs
#   scripts/ensure-postgres.sh --help
#
# Stdout carries exactly one line, the URL; every diagnostic goes to stderr:
#   export DATABASE_URL="$(scripts/ensure-postgres.sh)"
#
# Candidates, first that works wins:
#   1. $DATABASE_URL, if its server answers. With an explicit DBNAME argument
#      the database in the URL is replaced by DBNAME. The database is created
#      if missing (when the role may); if the server answers but the database
#      still can't be reached, the script fails rather than silently using
#      another server.
#   2. The system server, $SLUICE_SYSTEM_PG_URL
#      (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable;
#      set it to "" or "none" to skip), with its database replaced by DBNAME.
#      Skipped, with a note, when it answers but refuses us (e.g. password auth).
#   3. A private cluster: initdb --auth=trust -U postgres into
#      $SLUICE_PG_DATA (default <repo>/.dev/pg, or, when the postgres OS user
#      can't reach the repo, ${XDG_RUNTIME_DIR:-/tmp}/sluice-pg-<uid>-<hash>
#      with <repo>/.dev/pg as a symlink to it), listening on 127.0.0.1 port
#      $SLUICE_PG_PORT (default 55432) only, unix socket in the data dir, log
#      in <data>/postgres.log. Tuned for tests (fsync off): never keep data
#      you care about in it. Prints
#      postgres://postgres@127.0.0.1:<port>/<DBNAME>?sslmode=disable
#      Run as root, the cluster is created and run as the `postgres` OS user
#      (initdb and pg_ctl refuse root); otherwise as the current user.
#      A running cluster is reused; a stale postmaster.pid is handled by
#      pg_ctl.
#
# Binaries: $SLUICE_PG_BINDIR, else `pg_config --bindir`, else the highest
# /usr/lib/postgresql/*/bin, else initdb/pg_ctl on $PATH. An existing data
# dir is started with the binaries of its own major version when installed.
set -euo pipefail

PROG=ensure-postgres
DEFAULT_DB=sluice
PG_PORT=${SLUICE_PG_PORT:-55432}
SYSTEM_URL=${SLUICE_SYSTEM_PG_URL-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

# From here on, stdout is stderr; the URL goes to fd 3 (the real stdout).
# Long-running children (the postmaster) must not inherit fd 3 or the lock
# fd, or "$(ensure-postgres.sh)" would wait for them to exit.
exec 3>&1 1>&2

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------
# Binaries

BINDIR=""
PSQL=""
PG_ISREADY=""

# has_server_bins DIR: DIR holds initdb, pg_ctl and postgres.
has_server_bins() {
  [[ -n $1 && -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]
}

# find_bindir [MAJOR]: set BINDIR to a directory with the server binaries,
# preferring major version MAJOR when given. Leaves BINDIR empty if none.
find_bindir() {
  local want=${1:-} d
  BINDIR=""
  if [[ -n ${SLUICE_PG_BINDIR:-} ]]; then
    has_server_bins "$SLUICE_PG_BINDIR" || die "SLUICE_PG_BINDIR=$SLUICE_PG_BINDIR has no initdb/pg_ctl/postgres"
    BINDIR=$SLUICE_PG_BINDIR
    return 0
  fi
  if [[ -n $want ]] && has_server_bins "/usr/lib/postgresql/$want/bin"; then
    BINDIR=/usr/lib/postgresql/$want/bin
    return 0
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if has_server_bins "$d"; then
      BINDIR=$d
      return 0
    fi
  fi
  if [[ -d /usr/lib/postgresql ]]; then
    while IFS= read -r d; do
      if has_server_bins "/usr/lib/postgresql/$d/bin"; then
        BINDIR=/usr/lib/postgresql/$d/bin
        return 0
      fi
    done < <(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -rV)
  fi
  if command -v initdb >/dev/null 2>&1; then
    d=$(dirname "$(command -v initdb)")
    if has_server_bins "$d"; then
      BINDIR=$d
      return 0
    fi
  fi
  return 0
}

# find_client: set PSQL and PG_ISREADY (possibly empty).
find_client() {
  find_bindir
  if [[ -n $BINDIR && -x $BINDIR/psql ]]; then
    PSQL=$BINDIR/psql
  else
    PSQL=$(command -v psql 2>/dev/null || true)
  fi
  if [[ -n $BINDIR && -x $BINDIR/pg_isready ]]; then
    PG_ISREADY=$BINDIR/pg_isready
  else
    PG_ISREADY=$(command -v pg_isready 2>/dev/null || true)
  fi
  return 0
}

no_binaries() {
  die "no PostgreSQL binaries found (need psql, and initdb/pg_ctl/postgres for a private cluster).
  Install them:   sudo apt-get install -y postgresql
  (the server need not run; this script starts its own), or point
  SLUICE_PG_BINDIR at a directory holding initdb, pg_ctl and postgres,
  or set DATABASE_URL to a server you run yourself."
}

# ---------------------------------------------------------------------------
# URLs

URL_RE='^(postgres(ql)?://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$'

# url_with_db URL DB: URL with its database path replaced by DB.
url_with_db() {
  [[ $1 =~ $URL_RE ]] || return 1
  printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$2" "${BASH_REMATCH[4]}"
}

# url_db URL: the database named in URL (may be empty).
url_db() {
  [[ $1 =~ $URL_RE ]] || return 1
  local p=${BASH_REMATCH[3]}
  printf '%s\n' "${p#/}"
}

# redact URL: URL without its password, for messages.
redact() {
  # shellcheck disable=SC2001 # a regex replacement, not a simple substitution
  sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

# ---------------------------------------------------------------------------
# Talking to a server

# psql_run URL [psql args...]: run psql non-interactively against URL.
psql_run() {
  local url=$1
  shift
  PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} "$PSQL" -X -w -q -At -v ON_ERROR_STOP=1 -d "$url" "$@"
}

# answers URL: the server behind URL accepts connections (auth not checked).
answers() {
  local url=$1
  if [[ -n $PG_ISREADY ]]; then
    "$PG_ISREADY" -q -t 3 -d "$url" >/dev/null 2>&1
  else
    # pg_isready missing: fall back to a real query (also fails on auth).
    psql_run "$url" -c 'select 1' >/dev/null 2>&1
  fi
}

# ensure_db URL: make sure the database in URL exists and takes our queries,
# creating it through the server's maintenance database if needed.
ensure_db() {
  local url=$1 db maint out
  if out=$(psql_run "$url" -c 'select 1' 2>&1); then
    return 0
  fi
  db=$(url_db "$url") || {
    log "cannot connect to $(redact "$url"): $out"
    return 1
  }
  if [[ -z $db ]] || ! grep -q 'does not exist' <<<"$out" || ! grep -qi 'database' <<<"$out"; then
    log "cannot connect to $(redact "$url"): $out"
    return 1
  fi
  for maint in postgres template1; do
    maint=$(url_with_db "$url" "$maint")
    # \gexec runs the CREATE only when the database is missing.
    if out=$(psql_run "$maint" -v db="$db" 2>&1 <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    ); then
      log "created database \"$db\""
      break
    fi
  done
  if out=$(psql_run "$url" -c 'select 1' 2>&1); then
    return 0
  fi
  log "cannot create or reach database \"$db\" at $(redact "$url"): $out"
  return 1
}

# ---------------------------------------------------------------------------
# The private cluster

RUN_AS=""   # OS user running the cluster when we are root

setup_runner() {
  if [[ $EUID -eq 0 ]]; then
    id -u postgres >/dev/null 2>&1 ||
      die "running as root, but there is no 'postgres' OS user to run the private cluster as (initdb refuses root); run as a normal user, or: sudo apt-get install -y postgresql"
    RUN_AS=postgres
  fi
}

# as_runner CMD...: run CMD as the cluster's OS user, from / (the caller's
# cwd may be unreadable to that user).
as_runner() {
  if [[ -z $RUN_AS ]]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u "$RUN_AS" -- "$@")
  else
    (cd / && su -s /bin/bash "$RUN_AS" -c "$(printf '%q ' "$@")")
  fi
}

# detached CMD...: run CMD (typically as_runner ...) with only fds 0-2 open
# and stdin from /dev/null, so a daemon it leaves behind can't hold a
# caller's pipe (e.g. the one of "$(ensure-postgres.sh)") open.
detached() {
  (
    for fd in /proc/"$BASHPID"/fd/* 3 4 5 6 7 8 9; do
      fd=${fd##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
        eval "exec $fd>&-" 2>/dev/null || true
      fi
    done
    "$@" </dev/null
  )
}

# runner_reaches DIR: the cluster's OS user can traverse DIR.
runner_reaches() {
  as_runner test -d "$1" -a -x "$1" 2>/dev/null
}

# prepare_dir DIR: create DIR (mode 700) owned by the cluster's OS user.
prepare_dir() {
  local d=$1
  if [[ ! -d $d ]]; then
    mkdir -p "$d"
  fi
  if [[ -n $RUN_AS ]]; then
    chown "$RUN_AS": "$d"
  elif [[ ! -O $d ]]; then
    die "$d exists but is not owned by $(id -un)"
  fi
  chmod 700 "$d"
}

# existing_datadir: print the data dir to use, without creating anything.
# Empty when there is none yet.
existing_datadir() {
  local def=$REPO/.dev/pg
  if [[ -n ${SLUICE_PG_DATA:-} ]]; then
    realpath -m "$SLUICE_PG_DATA"
  elif [[ -L $def ]]; then
    readlink -m "$def"
  elif [[ -e $def ]]; then
    printf '%s\n' "$def"
  fi
}

# choose_datadir: print the data dir to use, creating what it needs.
choose_datadir() {
  local d base hash
  d=$(existing_datadir)
  if [[ -n $d ]]; then
    printf '%s\n' "$d"
    return 0
  fi
  mkdir -p "$REPO/.dev"
  if runner_reaches "$REPO/.dev"; then
    printf '%s\n' "$REPO/.dev/pg"
    return 0
  fi
  # The cluster's user can't reach the repo (e.g. it lives under /root):
  # keep the data elsewhere and leave a symlink for humans.
  hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
  for base in "${XDG_RUNTIME_DIR:-}" /tmp; do
    if [[ -n $base ]] && runner_reaches "$base"; then
      d=$base/sluice-pg-$(id -u)-$hash
      ln -sfn "$d" "$REPO/.dev/pg"
      log "the ${RUN_AS:-current} user cannot reach $REPO; private cluster data lives in $d"
      printf '%s\n' "$d"
      return 0
    fi
  done
  die "no directory reachable by the ${RUN_AS:-current} user for the private cluster; set SLUICE_PG_DATA"
}

# pg_major_of DATADIR: the major version that created DATADIR (or empty).
pg_major_of() {
  if [[ -r $1/PG_VERSION ]]; then
    cat "$1/PG_VERSION"
  elif [[ -n $RUN_AS ]]; then
    as_runner cat "$1/PG_VERSION" 2>/dev/null || true
  fi
}

cluster_running() { # DATADIR
  as_runner "$BINDIR/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# cluster_port DATADIR: the port the running postmaster listens on.
cluster_port() {
  as_runner sed -n 4p "$1/postmaster.pid"
}

# write_conf DATADIR PORT: (re)write the settings we own, included from
# postgresql.conf. Regenerated at each start so a moved repo or another
# SLUICE_PG_PORT just works.
write_conf() {
  local data=$1 port=$2 sockdir=$1 q
  # A unix socket path is limited to 107 bytes; TCP is all we need anyway.
  if ((${#data} + 20 > 107)); then
    sockdir=""
  fi
  q=${sockdir//\'/\'\'}
  as_runner tee "$data/sluice-dev.conf" >/dev/null <<EOF
# Written by scripts/ensure-postgres.sh at each start; edits are lost.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$q'
max_connections = 200
# A throwaway dev/test cluster: trade durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

# start_private DB: ensure the private cluster runs and holds DB; print URL.
start_private() {
  local db=$1 data major port url i out
  if [[ ! $PG_PORT =~ ^[0-9]+$ ]] || ((PG_PORT < 1 || PG_PORT > 65535)); then
    die "SLUICE_PG_PORT=$PG_PORT is not a port number"
  fi
  setup_runner
  data=$(choose_datadir)
  # Serialize concurrent callers (parallel test jobs) on this cluster. The
  # lock file sits beside the data dir, so it is writable by us.
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname "$data")"
    exec 9>"$data.lock"
    flock -w 120 9 || die "timed out waiting for the lock $data.lock"
  fi

  major=$(pg_major_of "$data")
  find_bindir "$major"
  [[ -n $BINDIR ]] || no_binaries
  PSQL=$BINDIR/psql
  PG_ISREADY=$BINDIR/pg_isready
  [[ -x $PSQL ]] || no_binaries
  if [[ -n $major ]]; then
    local have
    have=$("$BINDIR/postgres" -V | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
    [[ $have == "$major" ]] || die "$data was created by PostgreSQL $major but only $have binaries ($BINDIR) are installed; install postgresql-$major or remove $data"
  fi

  if [[ -z $major ]]; then
    prepare_dir "$data"
    if as_runner find "$data" -mindepth 1 -maxdepth 1 | grep -q .; then
      die "$data is not empty but holds no cluster (no PG_VERSION); remove it and retry"
    fi
    log "creating a private cluster in $data ($("$BINDIR/postgres" -V))"
    if ! out=$(as_runner "$BINDIR/initdb" -D "$data" --auth=trust -U postgres --encoding=UTF8 --locale=C 2>&1); then
      printf '%s\n' "$out" >&2
      die "initdb failed"
    fi
    printf "\ninclude_if_exists = 'sluice-dev.conf'\n" | as_runner tee -a "$data/postgresql.conf" >/dev/null
  else
    prepare_dir "$data" # restores ownership/mode if /tmp was recreated etc.
  fi

  if cluster_running "$data"; then
    port=$(cluster_port "$data")
    [[ $port == "$PG_PORT" ]] || log "note: the private cluster already runs on port $port (not $PG_PORT); reusing it"
    log "reusing the private cluster in $data on port $port"
  else
    port=$PG_PORT
    write_conf "$data" "$port"
    log "starting the private cluster on 127.0.0.1:$port (log: $data/postgres.log)"
    # pg_ctl -w waits until the server accepts connections; the postmaster's
    # output goes to the log and it must not inherit fds 3/9 (see above).
    if ! detached as_runner "$BINDIR/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 60 start >&2; then
      log "pg_ctl start failed; last lines of $data/postgres.log:"
      as_runner tail -n 20 "$data/postgres.log" >&2 || true
      die "could not start the private cluster (is port $port taken? try SLUICE_PG_PORT=...)"
    fi
  fi

  url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  for ((i = 0; i < 60; i++)); do
    "$PG_ISREADY" -q -t 2 -d "$url" >/dev/null 2>&1 && break
    sleep 0.5
  done
  url=$(url_with_db "$url" "$db")
  ensure_db "$url" || die "the private cluster on port $port does not take queries (see $data/postgres.log)"
  printf '%s\n' "$url" >&3
}

stop_private() {
  local data major
  data=$(existing_datadir)
  setup_runner
  major=""
  if [[ -n $data ]]; then
    major=$(pg_major_of "$data")
  fi
  if [[ -z $major ]]; then
    log "no private cluster${data:+ in $data}"
    return 0
  fi
  find_bindir "$major"
  [[ -n $BINDIR ]] || no_binaries
  if cluster_running "$data"; then
    as_runner "$BINDIR/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
    log "stopped the private cluster in $data"
  else
    log "the private cluster in $data is not running"
  fi
}

status_private() {
  local data major
  data=$(existing_datadir)
  setup_runner
  major=""
  if [[ -n $data ]]; then
    major=$(pg_major_of "$data")
  fi
  if [[ -z $major ]]; then
    log "no private cluster"
    return 1
  fi
  find_bindir "$major"
  [[ -n $BINDIR ]] || no_binaries
  if cluster_running "$data"; then
    log "the private cluster in $data runs on 127.0.0.1:$(cluster_port "$data")"
    return 0
  fi
  log "the private cluster in $data is not running"
  return 1
}

# ---------------------------------------------------------------------------

main() {
  local db="" url
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
  -*) die "unknown option $1 (see --help)" ;;
  esac
  (($# <= 1)) || die "too many arguments (see --help)"
  db=${1:-}
  if [[ -n $db && ! $db =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]]; then
    die "database name '$db' must match [A-Za-z_][A-Za-z0-9_-]*"
  fi

  find_client

  # 1. $DATABASE_URL
  if [[ -n ${DATABASE_URL:-} ]]; then
    [[ -n $PSQL ]] || no_binaries
    url=$DATABASE_URL
    if [[ -n $db ]]; then
      url=$(url_with_db "$DATABASE_URL" "$db") ||
        die "DATABASE_URL is not a postgres:// URL, so database '$db' can't be put in it"
    fi
    if answers "$url"; then
      ensure_db "$url" || die "DATABASE_URL=$(redact "$url") answers but is not usable (see above)"
      log "using DATABASE_URL"
      printf '%s\n' "$url" >&3
      return 0
    fi
    log "DATABASE_URL=$(redact "$url") does not answer; trying the next candidate"
  fi

  db=${db:-$DEFAULT_DB}

  # 2. The system server.
  if [[ -n $SYSTEM_URL && $SYSTEM_URL != none && -n $PSQL ]]; then
    url=$(url_with_db "$SYSTEM_URL" "$db") || die "SLUICE_SYSTEM_PG_URL is not a postgres:// URL"
    if answers "$url"; then
      if ensure_db "$url"; then
        log "using the system PostgreSQL"
        printf '%s\n' "$url" >&3
        return 0
      fi
      log "the system PostgreSQL answers but refuses us; starting a private cluster instead"
    fi
  fi

  # 3. The private cluster.
  start_private "$db"
}

main "$@"
