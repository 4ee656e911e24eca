#!/usr/bin/env bash
# Fuzzes every Fuzz* target in the module, one `go test -fuzz` run per target (go test fuzzes
# one target of one package at a time), for FUZZTIME each.
#
#   FUZZTIME           time per target (default 5s; `make fuzz` uses 60s), any -fuzztime value
#   FUZZ_TARGETS       extended regexp a target's whole name must match (default: every target),
#                      such as 'FuzzAPI|FuzzWebhookTarget' 
#   FUZZ_CACHE         where the generated corpus is kept between runs (default .dev/fuzz-cache,
#                      ignored by git, independent of GOCACHE: `go clean -cache` keeps it)
#   TEST_DATABASE_URL  Postgres for the targets that need it (FuzzAPI); if unset it is found
#                      or started as for `make test` (scripts/ensure-postgres.sh sluice_test)
#   GO                 the go command (default go)
#
# A failing input fails the run: it is printed, and left where go test writes it,
# <package>/testdata/fuzz/<Target>/<hash>, so that `go test -run=<Target>/<hash> ./<package>`
# replays it; commit it with the fix as a regression seed. A run that finds nothing leaves
# no file in the tree outside FUZZ_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
FUZZ_TARGETS=${FUZZ_TARGETS:-Fuzz.*}
FUZZ_CACHE=${FUZZ_CACHE:-.dev/fuzz-cache}
if [[ -z ${TEST_DATABASE_URL:-} ]]; then
	TEST_DATABASE_URL="$(scripts/ensure-postgres.sh sluice_test)"
fi
export TEST_DATABASE_URL
mkdir -p "$FUZZ_CACHE"
FUZZ_CACHE=$(cd "$FUZZ_CACHE" && pwd)

# Every "func FuzzX(f *testing.F)" in a _test.go file, as "<package dir> <target>".
mapfile -t targets < <(
	find . -name '*_test.go' -not -path './.dev/*' -not -path './vendor/*' -print0 |
		xargs -0 -r grep -HoE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' |
		sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' |
		{ grep -E " (${FUZZ_TARGETS})\$" || true; } | sort -u
)
if ((${#targets[@]} == 0)); then
	echo "fuzz: no target matches FUZZ_TARGETS=${FUZZ_TARGETS}" >&2
	exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/log
failed=()
began=$SECONDS
echo "fuzz: ${#targets[@]} targets, ${FUZZTIME} each (corpus cache ${FUZZ_CACHE})"
# One instrumented test binary per package (-fuzz at build time adds the coverage
# instrumentation), built in parallel up front: linking one for each target would cost more
# than fuzzing it.
bin() { echo "$work/${1//\//_}.test"; }
declare -A building=()
for dir in $(printf '%s\n' "${targets[@]}" | cut -d' ' -f1 | sort -u); do
	"$GO" test -c -o "$(bin "$dir")" -fuzz '^Fuzz' "./$dir" >"$(bin "$dir").log" 2>&1 &
	building[$dir]=$!
done
for dir in "${!building[@]}"; do
	if ! wait "${building[$dir]}"; then
		echo "fuzz: FAIL  cannot build ./$dir"
		sed 's/^/    /' "$(bin "$dir").log"
		failed+=("build ($dir)")
	fi
done
echo "fuzz: built in $((SECONDS - began))s"
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	[[ -x $(bin "$dir") ]] || continue
	seeds="$dir/testdata/fuzz/$name"
	before=$(ls -A "$seeds" 2>/dev/null || true)
	start=$SECONDS
	# Run in the package's directory, as go test does: the seeds are read from, and a
	# failing input written to, testdata/fuzz there. -test.fuzzminimizetime bounds the
	# minimisation of each new input: with the slower targets (FuzzAPI,
	# FuzzUpstreamErrorHidesURL) the default (60s) could take all of FUZZTIME.
	if (cd "$dir" && "$(bin "$dir")" -test.paniconexit0 -test.timeout=30m -test.run='^$' -test.fuzz="^${name}\$" \
		-test.fuzztime="$FUZZTIME" -test.fuzzminimizetime=5s -test.fuzzcachedir="$FUZZ_CACHE/$dir") >"$log" 2>&1; then
		printf 'fuzz: ok    %-28s %-22s %3ds  %s\n' "$name" "$dir" $((SECONDS - start)) \
			"$(grep -oE 'execs: [0-9]+' "$log" | tail -1)"
		continue
	fi
	after=$(ls -A "$seeds" 2>/dev/null || true)
	# Go 1.26's coordinator can report the end of -fuzztime itself as a failure: the run
	# ends with a bare "context deadline exceeded" under the target's FAIL line and writes
	# no input (go.dev/issue/75804, fixed in Go 1.27). That is a run that found nothing.
	if [[ $after == "$before" ]] && [[ $(grep -c -- '--- FAIL' "$log") == 1 ]] &&
		grep -A1 -- "^--- FAIL: ${name} (" "$log" | tail -1 | grep -qx '    context deadline exceeded'; then
		printf 'fuzz: ok    %-28s %-22s %3ds  %s (go.dev/issue/75804: the deadline reported as a failure; no failing input)\n' \
			"$name" "$dir" $((SECONDS - start)) "$(grep -oE 'execs: [0-9]+' "$log" | tail -1)"
		continue
	fi
	printf 'fuzz: FAIL  %-28s %-22s %3ds\n' "$name" "$dir" $((SECONDS - start))
	failed+=("$name ($dir)")
	grep -v '^fuzz: elapsed' "$log" | sed 's/^/    /'
	for f in $(comm -13 <(printf '%s\n' "$before" | sort) <(ls -A "$seeds" 2>/dev/null | sort)); do
		echo "    failing input $seeds/$f (replay: $GO test -run='^$name/$f\$' ./$dir):"
		sed 's/^/      /' "$seeds/$f"
	done
done
echo "fuzz: ${#targets[@]} targets in $((SECONDS - began))s"
if ((${#failed[@]} > 0)); then
	echo "fuzz: FAILED: ${failed[*]}" >&2
	exit 1
fi
