#!/usr/bin/env bash
# Installs what building and testing probe needs on a Debian machine (bookworm or later), then
# builds it: `./setup.sh`, and `sudo ./target/release/probe-user` runs it. Idempotent; asks
# nothing. It installs no kernel on this machine: the tests fetch Debian's kernels into
# target/xtask/kernels and boot them in qemu. `./setup.sh --no-build` only installs.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

build=1
case "${1:-}" in
  --no-build) build=0 ;;
  "") ;;
  *) echo "usage: ./setup.sh [--no-build]" >&2; exit 2 ;;
esac

sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

# Debian packages, and what each is for.
packages=(
  llvm-22-dev          # bpf-linker links the eBPF object with LLVM 22, rustc's own LLVM
  gcc                  # the host linker for cargo
  clang-22             # compiles ring's C and assembly for the static aarch64 build
  musl-tools           # static probe-user for the test VMs and the release tarball
  qemu-system-x86      # the test VMs (cargo xtask test, run, bench)
  qemu-system-arm      # the arm64 test VMs (cargo xtask test --arch aarch64)
  busybox-static       # the test VMs' userland
  cpio                 # packs the test VMs' initramfs
  iproute2             # the native tests' network namespace (ip link set lo up)
  groff-base           # renders the man page in the release check
)
need=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  echo "setup: Debian packages present: ${packages[*]}"
fi

# Rust: the toolchain pinned in rust-toolchain.toml, through rustup (Debian packages rustup
# from trixie on; on bookworm install it first, as rustup's own documentation says).
if ! command -v rustup >/dev/null 2>&1; then
  if apt-cache show rustup >/dev/null 2>&1; then
    echo "setup: installing Debian package: rustup"
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends rustup
  else
    echo "setup: error: rustup is not installed and this Debian release does not package it; install rustup, then run ./setup.sh again" >&2
    exit 1
  fi
fi
echo "setup: installing the Rust toolchain pinned in rust-toolchain.toml (with rust-src and the musl target)"
rustup toolchain install

# bpf-linker against Debian's LLVM 22 (built with the pinned toolchain; ~2 minutes once).
if ! command -v bpf-linker >/dev/null 2>&1; then
  echo "setup: building bpf-linker (cargo install, against LLVM 22)"
  PATH=/usr/lib/llvm-22/bin:$PATH LLVM_PREFIX=/usr/lib/llvm-22 \
    cargo install --locked bpf-linker --no-default-features --features llvm-22
fi

if [ "$build" = 1 ]; then
  echo "setup: building (cargo build --release)"
  cargo build --release
  echo "setup: done: sudo ./target/release/probe-user traces connects; cargo xtask test tests it"
fi
