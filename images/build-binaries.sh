#!/usr/bin/env bash
# Builds what the manager image carries: static `beowulf` and `csctl` for linux/amd64 and linux/arm64, into
# OUT/linux-amd64/ and OUT/linux-arm64/ (then: beowulf release --binaries OUT ...).
#
# The route: cargo's own cross-compilation with Debian's cross toolchain (gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross) as linker and C compiler for arm64 (aws-lc-sys compiles C), and glibc linked
# statically (`+crt-static`) for both, so the image needs no libc and no base image. glibc 2.36 has its
# files and DNS name services inside libc, so name resolution works in a static binary without NSS modules.
# No container engine, no emulated compiler: an arm64 build takes about as long as the native one.
# Usage: images/build-binaries.sh OUT   (needs: rustup target add aarch64-unknown-linux-gnu, and the
# apt packages above; .ci/install installs them)
set -euo pipefail
out=${1:?usage: images/build-binaries.sh OUT}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# Symbols stripped after the build (binutils of each platform; deterministic), not by the profile: the
# release profile stays what `cargo build --release` users get, and the binaries shrink by about a quarter.
for spec in amd64:x86_64-unknown-linux-gnu:strip arm64:aarch64-unknown-linux-gnu:aarch64-linux-gnu-strip; do
  IFS=: read -r arch triple strip_tool <<<"$spec"
  start=$(date +%s)
  cargo build --locked --release --target "$triple" -p beowulf-provider --bin beowulf -p csctl --bin csctl
  mkdir -p "$out/linux-$arch"
  for b in beowulf csctl; do
    "$strip_tool" -o "$out/linux-$arch/$b.tmp$$" "$target_dir/$triple/release/$b"
    chmod 0755 "$out/linux-$arch/$b.tmp$$"
    mv "$out/linux-$arch/$b.tmp$$" "$out/linux-$arch/$b"
  done
  echo "==> linux/$arch built in $(( $(date +%s) - start ))s" >&2
done
