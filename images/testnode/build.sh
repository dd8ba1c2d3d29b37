#!/usr/bin/env bash
# Builds the tiny test node image from Debian packages: the Debian kernel that .ci/install unpacks
# ($BEOWULF_PEERS_DIR/kroot) and a busybox-static initramfs with the NIC drivers (virtio-net chain and e1000),
# disk drivers and the local-disk agent (images/local-disks).
# Its /init configures eth0 by DHCP, fetches its NoCloud data with the per-boot token from the kernel command
# line, fetches the live rootfs, prints what it got (sizes and sha256), calls back, and powers off (unless its
# user-data has the line `# testnode: stay on`: then it stays up until its BMC powers it off).
#
# usage: images/testnode/build.sh [OUT_DIR]     (default: $CARGO_TARGET_DIR or target/, then /testnode)
# output: OUT_DIR/{vmlinuz,initrd.gz,rootfs.img}. Deterministic for a given kernel and busybox.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
peers=${BEOWULF_PEERS_DIR:-/opt/beowulf-peers}
out=${1:-${CARGO_TARGET_DIR:-$repo/target}/testnode}

kroot=$peers/kroot
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* 2>/dev/null | sort | tail -n1 || true)
[ -n "$vmlinuz" ] || { echo "no kernel under $kroot/boot: run .ci/install (or set BEOWULF_PEERS_DIR)" >&2; exit 1; }
kver=${vmlinuz##*/vmlinuz-}
moddir=$kroot/lib/modules/$kver/kernel
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "busybox-static is not installed: run .ci/install" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ir=$work/ir
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,etc/udhcpc,lib/modules}
cp "$busybox" "$ir/bin/busybox"
# NIC drivers (virtio-net chain, e1000), disk drivers (virtio-blk, NVMe) and ext4 for local disks; loaded in
# dependency order by the init (images/lib/kmods.sh resolves them).
# shellcheck source=../lib/kmods.sh
source "$here/../lib/kmods.sh"
kmods_resolve "$moddir" e1000 virtio_pci virtio_net virtio_blk nvme crc32c_generic ext4
kmods_install "$ir"
# The local-disk agent and what it runs that busybox lacks (blkid -p, mke2fs for ext4, wipefs), with their
# shared libraries, from the build machine's Debian packages (util-linux, e2fsprogs).
install -m 0755 "$here/../local-disks/beowulf-disks" "$ir/bin/beowulf-disks"
# In /sbin, ahead of busybox's applets of the same names (which lack `blkid -p` and ext4) on the init's PATH.
for tool in /sbin/blkid /sbin/mke2fs /sbin/wipefs; do
  [ -x "$tool" ] || { echo "$tool is missing: run .ci/install (util-linux, e2fsprogs)" >&2; exit 1; }
  install -D -m 0755 "$tool" "$ir$tool"
  for lib in $(ldd "$tool" | grep -o '/[^ ]*'); do install -D -m 0755 "$lib" "$ir$lib"; done
done
install -m 0755 "$here/default.script" "$ir/etc/udhcpc/default.script"
install -m 0755 "$here/init" "$ir/init"

mkdir -p "$out"
# Fixed mtimes and sorted names: the same inputs give the same initrd bytes.
find "$ir" -exec touch -h -d @0 {} +
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible --quiet | gzip -n -1) > "$out/initrd.gz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
cp "$vmlinuz" "$out/vmlinuz"
# The "live rootfs": the node only downloads and hashes it, so any bytes do; 1 MiB of deterministic data.
head -c 1048576 /dev/zero | tr '\0' 'B' > "$out/rootfs.img"
echo "testnode image in $out (kernel $kver; modules: ${kmods_order[*]}):"
ls -l "$out"
