#!/usr/bin/env bash
# Runs the benchmarks: bench/run.sh [scenario ...]   (default: every scenario)
#   BENCH_REPEATS=3       interleaved rounds per server (the table shows medians)
#   BENCH_DURATION=10s    length of each wrk run
#   BENCH_SKIP_INSTALL=1  use the installed .venv/bin/baseplate-serve as is
# Writes bench/RESULTS.md; raw per-run output goes to bench/out/.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
export BENCH_REPEATS="${BENCH_REPEATS:-3}"
export BENCH_DURATION="${BENCH_DURATION:-10s}"

# Peers live in their own venv so they can never leak into, or be shadowed
# by, the project's .venv.
if [ ! -x "$BENCH/.venv/bin/python" ]; then
  python3 -m venv "$BENCH/.venv"
  "$BENCH/.venv/bin/pip" install -q --upgrade pip
fi
"$BENCH/.venv/bin/pip" install -q -r "$BENCH/requirements.txt"

# Our server. The tree is shared, so an install can fail while someone else
# is mid-rebuild: retry a few times before giving up.
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
  for attempt in 1 2 3; do
    if make -C "$ROOT" install; then break; fi
    [ "$attempt" = 3 ] && { echo "make install failed" >&2; exit 1; }
    echo "make install failed; retrying in 30 s" >&2
    sleep 30
  done
fi

scenarios=()
for s in "$@"; do scenarios+=(--scenario "$s"); done
cmd="BENCH_REPEATS=$BENCH_REPEATS BENCH_DURATION=$BENCH_DURATION bench/run.sh${*:+ $*}"
exec python3 "$BENCH/harness.py" "${scenarios[@]}" --command "$cmd"
