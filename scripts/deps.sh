#!/usr/bin/env bash
# Install natgw's build, test and lab dependencies from Debian packages. Idempotent.
set -euo pipefail
pkgs=(
  build-essential meson ninja-build pkg-config clang llvm lld libclang-rt-14-dev
  libdpdk-dev dpdk dpdk-dev libtomlplusplus-dev libbpf-dev libgtest-dev libgmock-dev libbenchmark-dev
  libnuma-dev libpcap-dev libelf-dev zlib1g-dev
  python3 python3-scapy iproute2 iputils-ping curl ethtool tcpdump socat netcat-openbsd nftables
  procps psmisc valgrind
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "deps: all installed"
fi
