#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 (ASan + UBSan) and runs each
# for FUZZ_SECONDS seconds (default 60) on a copy of its seed corpus under
# build/fuzz/, so the committed seeds stay as they are. Exits non-zero if
# any target crashed; the reproducer is left in build/fuzz/artifacts/NAME/
# (copy it to fuzz/crashes/ to keep it).
#
#   fuzz/run.sh                   # both targets, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh http_fuzz
#   build/fuzz/http_fuzz fuzz/crashes/FILE    # replay one input
#   FUZZ_FLAGS="-fork=2 -ignore_ooms=1" fuzz/run.sh   # extra libFuzzer flags
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build/fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
CXX="${FUZZ_CXX:-clang++-14}"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(http_fuzz thrift_fuzz)
fi

command -v "$CXX" >/dev/null || { echo "fuzz/run.sh: $CXX not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }

cmake -S "$ROOT/fuzz" -B "$BUILD" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"

status=0
for target in "${TARGETS[@]}"; do
  kind="${target%_fuzz}"
  seeds="$ROOT/fuzz/corpus/$kind"
  work="$BUILD/corpus/$kind"
  artifacts="$BUILD/artifacts/$kind"
  mkdir -p "$work" "$artifacts"
  cp -n "$seeds"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f "$ROOT/fuzz/$kind.dict" ] && dict=(-dict="$ROOT/fuzz/$kind.dict")
  echo "== $target: ${SECONDS_EACH}s on $work"
  if ! "$BUILD/$target" "$work" "${dict[@]}" \
      -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_FLAGS:-}; then
    echo "== $target FAILED: reproducer(s) in $artifacts/" >&2
    ls -l "$artifacts" >&2 || true
    status=1
  else
    echo "== $target: no crash"
  fi
done
exit "$status"
