#!/usr/bin/env bash
# Runs clang-tidy (config: .clang-tidy) over the library and CLI sources and fails on any warning.
#   scripts/check_tidy.sh BUILD_DIR      (BUILD_DIR holds compile_commands.json)
# Tests and benchmarks are not checked (gtest/benchmark macros trip several checks).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
if [ ! -f "$build/compile_commands.json" ]; then
  echo "check_tidy: $build/compile_commands.json not found (configure with CMake first)" >&2
  exit 2
fi
# Only sources that this build compiles (CUDA-only and service-only files may be absent).
mapfile -t files < <(git ls-files 'kernels/*.cc' 'model/*.cc' 'rollout/*.cc' 'trainer/*.cc' \
  'rewards/*.cc' 'cli/*.cc' | while read -r f; do
  grep -q "\"file\": \".*/$f\"" "$build/compile_commands.json" && echo "$f"; done)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
printf '%s\n' "${files[@]}" |
  xargs -P "${TANDEM_JOBS:-2}" -n 4 "$CLANG_TIDY" -p "$build" --quiet >"$log" 2>/dev/null || true
if grep -qE "(warning|error):" "$log"; then
  grep -E -A3 "(warning|error):" "$log"
  echo "clang-tidy: $(grep -cE '(warning|error):' "$log") finding(s) in ${#files[@]} files"
  exit 1
fi
echo "clang-tidy: ${#files[@]} files clean"
