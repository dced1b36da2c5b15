#!/bin/sh
# The whole suite N times in a row (default 10) while `stress-ng --cpu 2` keeps two cores busy:
# tests whose outcome depends on how fast the machine is fail here first. Not part of CI (about
# an hour for ten runs). Each run is `node scripts/test-kinds.mjs` (what `npm test` runs after
# the build and lint); its output goes to a log file, and the closing line counts the runs.
#
#   sh scripts/stress-suite.sh [N] [LOG_DIR]
set -u
runs=${1:-10}
logs=${2:-$(mktemp -d "${TMPDIR:-/tmp}/busrt-stress-XXXXXX")}
mkdir -p "$logs"
if ! command -v stress-ng >/dev/null 2>&1; then
  echo "stress-suite: stress-ng is not installed (apt-get install stress-ng)" >&2
  exit 2
fi
npm run build >"$logs/build.log" 2>&1 || { echo "stress-suite: the build failed, see $logs/build.log" >&2; exit 1; }

stress-ng --cpu 2 --quiet &
load=$!
stop_load() {
  kill "$load" 2>/dev/null
  wait "$load" 2>/dev/null
}
trap stop_load EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
i=1
while [ "$i" -le "$runs" ]; do
  start=$(date +%s)
  if node scripts/test-kinds.mjs >"$logs/run-$i.log" 2>&1; then
    passed=$((passed + 1))
    verdict=passed
  else
    failed=$((failed + 1))
    verdict=FAILED
  fi
  echo "run $i: $verdict in $(($(date +%s) - start)) s ($(grep -E '^tests: ' "$logs/run-$i.log" | tail -1))"
  if [ "$verdict" = FAILED ]; then grep -E '^\s+● ' "$logs/run-$i.log" | sort -u | sed 's/^/  /'; fi
  i=$((i + 1))
done
echo "logs: $logs"
echo "stress runs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
