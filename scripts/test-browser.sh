#!/usr/bin/env bash
# The web console's browser test (make test-browser): headless Chromium, driven by chromedp,
# against a real stack (ingress, worker with the built-in fake model, Postgres, embedded
# NATS). It signs in, creates a key and a channel, runs completions and a batch, and checks
# the usage charts, the jobs browser and the channels' health; any console error fails it.
# A screenshot of each page is left in .dev/screenshots/ (ignored by git).
#
#   TEST_DATABASE_URL  Postgres; if unset it is found or started as for `make test`
#   GO                 the go command (default go)
#
# Chromium is Debian's package, installed here when missing (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
if ! command -v chromium >/dev/null 2>&1; then
  echo "test-browser: installing chromium" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-browser: chromium is missing and this is not root: apt-get install chromium" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  TEST_DATABASE_URL="$(scripts/ensure-postgres.sh sluice_test)"
fi
export TEST_DATABASE_URL
export SLUICE_SCREENSHOTS="$PWD/.dev/screenshots"
rm -rf "$SLUICE_SCREENSHOTS"
mkdir -p "$SLUICE_SCREENSHOTS"
"$GO" test -tags browser -race -count=1 -timeout 5m -run '^TestBrowser' ./internal/e2e/
echo "test-browser: screenshots in .dev/screenshots/: $(cd "$SLUICE_SCREENSHOTS" && ls | tr '\n' ' ')"
