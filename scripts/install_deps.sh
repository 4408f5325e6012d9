#!/usr/bin/env bash
# Installs the Debian 12 packages Tandem builds against. Idempotent: packages that are already
# present are left alone. Uses sudo when not run as root.
#
#   build:     cmake g++ make pkg-config
#   core:      libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
#   services:  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
#   trainer:   libopenmpi-dev openmpi-bin
#   tests:     libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev clang-format clang-tidy
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  libabsl-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev clang-format clang-tidy
  # rewards: the Python RewardService server for verl compute_score functions, and its tests
  python3-grpcio python3-protobuf
  # tests/repo/check_deploy.py reads the Kubernetes manifests
  python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
