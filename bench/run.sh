#!/usr/bin/env bash
# Runs the benchmarks: bench/run.sh [scenario ...]   (default: every scenario)
#   BENCH_REPEATS=3       interleaved rounds per case (the tables show medians)
#   BENCH_DURATION=10s    length of each load run
#   BENCH_SOAK=600        seconds of the soak scenario
#   BENCH_SKIP_INSTALL=1  use the installed .venv/bin/baseplate-serve as is
#   BENCH_RESULTS=PATH    write the report there instead of bench/RESULTS.md
# (bench/README.md lists every knob.) Writes bench/RESULTS.md and
# bench/results.png; raw per-run output goes to bench/out/.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
export BENCH_REPEATS="${BENCH_REPEATS:-3}"
export BENCH_DURATION="${BENCH_DURATION:-10s}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# System packages: wrk (HTTP load), libev-dev (bjoern), libevent-dev
# (TNonblockingServer), Boost and Thrift (bench/native), python3-dev (uwsgi
# builds from source), valgrind (the profile scenario: instructions per request).
APT_PACKAGES="wrk libev-dev libevent-dev libboost-dev libthrift-dev thrift-compiler pkg-config g++ make python3-dev valgrind"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

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

CMAKE="$ROOT/.venv/bin/cmake"
[ -x "$CMAKE" ] || CMAKE="$(command -v cmake || true)"
if [ -z "$CMAKE" ]; then
  "$ROOT/.venv/bin/pip" install -q cmake
  CMAKE="$ROOT/.venv/bin/cmake"
fi

# Load generators and reference servers (bench/native).
"$CMAKE" -S "$BENCH/native" -B "$BENCH/native/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
"$CMAKE" --build "$BENCH/native/build" -j2

# The native examples, against the SDK of the installed package, into
# examples/*/build (where their app.ini look for them).
SDK="$("$ROOT/.venv/bin/baseplate-serve" --sdk-dir)"
for ex in native_http native_thrift; do
  "$CMAKE" -S "$ROOT/examples/$ex" -B "$ROOT/examples/$ex/build" -DCMAKE_BUILD_TYPE=Release \
    -DBaseplateServe_DIR="$SDK" >/dev/null
  "$CMAKE" --build "$ROOT/examples/$ex/build" -j2
done

args=()
for s in "$@"; do args+=(--scenario "$s"); done
[ -n "${BENCH_RESULTS:-}" ] && args+=(--results "$BENCH_RESULTS")
# The reproduce command RESULTS.md records: the knobs that were set, and the scenarios.
# (grep finds nothing when no other knob is set: not an error)
knobs="$(env | grep -E '^BENCH_[A-Z_]+=' | grep -vE '^BENCH_(SKIP_INSTALL|RESULTS|REPEATS|DURATION)=' | sort | tr '\n' ' ' || true)"
cmd="${knobs}BENCH_REPEATS=$BENCH_REPEATS BENCH_DURATION=$BENCH_DURATION bench/run.sh${*:+ $*}"
[ -z "$knobs" ] && [ "$BENCH_REPEATS" = 3 ] && [ "$BENCH_DURATION" = 10s ] && [ $# = 0 ] && cmd="make bench"
exec python3 "$BENCH/harness.py" "${args[@]}" --command "$cmd"
