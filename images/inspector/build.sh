#!/usr/bin/env bash
# Builds the in-band hardware inspection image ("inspector") from Debian packages: the Debian kernel that
# .ci/install unpacks ($BEOWULF_PEERS_DIR/kroot) and a busybox-static initramfs with the NIC drivers of the
# test node image (virtio-net chain, e1000) and disk drivers (virtio-blk, NVMe, AHCI/SATA with sd).
# Its /init collects CPU, memory, disk, NIC, PCI, DMI and LLDP facts into /tmp/hardware.json, prints them between
# `INSPECTOR: BEGIN` and `INSPECTOR: END`, posts them to `beowulf.inspect=URL` when the kernel command line has
# one (over the NIC of `BOOTIF=`, else eth0, configured by DHCP), and powers off.
#
# usage: images/inspector/build.sh [OUT_DIR]     (default: $CARGO_TARGET_DIR or target/, then /inspector)
# output: OUT_DIR/{vmlinuz,initrd.gz}. Deterministic for a given kernel, busybox and Rust toolchain.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
peers=${BEOWULF_PEERS_DIR:-/opt/beowulf-peers}
out=${1:-${CARGO_TARGET_DIR:-$repo/target}/inspector}

kroot=$peers/kroot
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* 2>/dev/null | sort | tail -n1 || true)
[ -n "$vmlinuz" ] || { echo "no kernel under $kroot/boot: run .ci/install (or set BEOWULF_PEERS_DIR)" >&2; exit 1; }
kver=${vmlinuz##*/vmlinuz-}
moddir=$kroot/lib/modules/$kver/kernel
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "busybox-static is not installed: run .ci/install" >&2; exit 1; }

# The drivers the image needs (images/lib/kmods.sh adds their dependencies; loaded dependencies first).
wanted="e1000 virtio_pci virtio_net virtio_blk nvme ahci sd_mod"

# shellcheck source=../lib/kmods.sh
source "$here/../lib/kmods.sh"
# shellcheck disable=SC2086
kmods_resolve "$moddir" $wanted

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ir=$work/ir
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,etc/udhcpc,lib/modules}
cp "$busybox" "$ir/bin/busybox"
kmods_install "$ir"
# The udhcpc hook is the test node's (it configures the address and the default route).
install -m 0755 "$here/../testnode/default.script" "$ir/etc/udhcpc/default.script"
install -m 0755 "$here/init" "$ir/init"
# The LLDP listener (busybox has none): a static build of images/inspector/lldp, paths remapped so the binary
# does not depend on where the checkout is. Its own target directory: this may run inside `cargo test`.
triple=x86_64-unknown-linux-gnu
lldp_target=${CARGO_TARGET_DIR:-$repo/target}/inspector-lldp
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=$repo=/src --remap-path-prefix=$HOME=/home" \
  CARGO_TARGET_DIR=$lldp_target cargo build --quiet --locked --release --target "$triple" \
  --manifest-path "$repo/Cargo.toml" -p inspector-lldp \
  || { echo "building the LLDP listener failed (cargo, and the x86_64 target, are needed)" >&2; exit 1; }
install -m 0755 "$lldp_target/$triple/release/lldp-listen" "$ir/bin/lldp-listen"

mkdir -p "$out"
# Fixed mtimes and sorted names: the same inputs give the same initrd bytes.
find "$ir" -exec touch -h -d @0 {} +
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible --quiet | gzip -n -1) > "$out/initrd.gz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
cp "$vmlinuz" "$out/vmlinuz"
echo "inspector image in $out (kernel $kver; modules: ${kmods_order[*]}):"
ls -l "$out"
