#!/usr/bin/env bash
# Run HERE (the Debian 12 development machine), not on the GPU machine: downloads the Debian 12
# packages the core, tests and benches need and unpacks them into .device/deps (git-ignored). The
# GPU machine (Ubuntu 24.04, no network) has no Abseil, spdlog, fmt, GoogleTest or Benchmark; the
# device tool carries .device there and scripts/gpu/build_and_test.sh builds against it. Also
# downloads the fla-core wheel into .device/wheels for scripts/gpu/anchor.sh.
#
#   scripts/gpu/fetch_deps.sh            # idempotent; re-run after changing the package list
set -euo pipefail
cd "$(dirname "$0")/../.."

# Runtime + development packages (what `dpkg -L` shows the build uses: headers, .so symlinks and
# libraries, CMake package configs, GoogleTest/GMock/Benchmark static or shared libraries).
packages=(
  libabsl-dev libabsl20220623
  libspdlog-dev libspdlog1.10
  libfmt-dev libfmt9
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev libbenchmark1debian
)

deps=.device/deps
debs=.device/debs
rm -rf "$deps"
mkdir -p "$deps" "$debs"
(cd "$debs" && apt-get download "${packages[@]}")
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$deps"; done
rm -rf "$debs"

# Keep what a build reads: drop documentation, manuals and the static Abseil archives (CMake's
# absl targets import the shared libraries).
rm -rf "$deps"/usr/share/doc "$deps"/usr/share/man "$deps"/usr/share/lintian
rm -f "$deps"/usr/lib/x86_64-linux-gnu/libabsl_*.a

# The CMake package configs locate their prefix relative to their own path, except for a "/usr
# move" shortcut that applies only when the file really sits under /usr; fail loudly if any config
# names an absolute library or include path instead.
if grep -rlE '"/usr/(lib|include)/[^"]*\.(so|a|h)' "$deps"/usr/lib/x86_64-linux-gnu/cmake \
    "$deps"/usr/share/cmake 2>/dev/null; then
  echo "fetch_deps: absolute paths in the CMake configs above; fix before carrying" >&2
  exit 1
fi

# Python wheels for scripts/gpu/anchor.sh (PyTorch SDPA / fla anchors). fla-core holds fla.ops
# (chunk_simple_gla, fused_recurrent_simple_gla); its one plain dependency, einops, and torch and
# triton are already on the GPU machine, so only this pure-Python wheel travels. The version is
# pinned: anchor_compare.py's calls were checked against its source. A failed download does not
# stop the C++ dependencies above; the fla anchors are then skipped there.
wheels=.device/wheels
rm -rf "$wheels"
mkdir -p "$wheels"
if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py -d "$wheels" fla-core==0.6.0; then
  echo "fetch_deps: could not download the fla-core wheel; the fla anchors will be skipped" >&2
fi

du -sh .device
echo "fetch_deps: unpacked ${#packages[@]} packages into $deps; wheels: $(ls "$wheels")"
