#!/usr/bin/env bash
# Builds the stateless HPC node image: a live squashfs root filesystem, the Debian kernel and a dracut initrd
# (dmsquash-live + livenet + network-legacy) that downloads the squashfs over HTTP into RAM and boots it with
# an overlayfs upper layer in RAM. Boot it with
#   root=live:http://<server>/rootfs.squashfs rd.live.overlay.overlayfs=1 ip=dhcp ds=nocloud-net;s=<seed URL>
#
# usage: images/hpc-node/build.sh [OUT_DIR]
#   VARIANT=ci    (default) Debian bookworm packages only: systemd, cloud-init, sssd (LDAP), munge, slurmd,
#                 curl. What the e2e suite builds and boots; no Kubernetes.
#   VARIANT=full  adds containerd, kubelet/kubeadm/kubectl (pkgs.k8s.io), SLURM from $SLURM_APT_URL and the
#                 CVMFS client (CERN). Needs those sources reachable (or mirrors of them, see README.md).
# output: OUT_DIR/{vmlinuz,initrd.img,rootfs.squashfs,SHA256SUMS,image.yaml}
#         (default OUT_DIR: ${CARGO_TARGET_DIR:-target}/images/hpc-node-$VARIANT)
#
# A finished build records the hash of this recipe (the files in images/hpc-node/ except *.md, the local-disk
# agent, plus the variables below); running again with the same recipe and an intact output reuses it ("up to date").
# FORCE=1 rebuilds.
# Deterministic where practical: SOURCE_DATE_EPOCH fixes every mtime in the squashfs and the initrd, file order
# is sorted, machine-id, logs, apt lists and caches are removed. The package versions are whatever the mirror
# serves on the day (pin a snapshot.debian.org mirror for bit-identical rebuilds).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

VARIANT=${VARIANT:-ci}
# SUITE, the Debian mirrors, SLURM's source and SOURCE_DATE_EPOCH: shared with the controller image.
. "$here/../package-sources.sh"
slurm_suite "$VARIANT" >/dev/null || exit 2
# Full variant only: the sources outside Debian main.
K8S_MINOR=${K8S_MINOR:-v1.33}
K8S_APT_URL=${K8S_APT_URL:-https://pkgs.k8s.io/core:/stable:/$K8S_MINOR/deb}
CVMFS_APT_URL=${CVMFS_APT_URL:-https://cvmrepo.s3.cern.ch/cvmrepo/apt}
IMAGE_VERSION=${IMAGE_VERSION:-1.33.0-beowulf.2}

case "$VARIANT" in
  ci) name=hpc-node-ci ;;
  full) name=hpc-node ;;
  *) echo "VARIANT must be ci or full, not '$VARIANT'" >&2; exit 2 ;;
esac
out=${1:-${CARGO_TARGET_DIR:-$repo/target}/images/$name}

recipe_hash=$(recipe_hash "$here" "$VARIANT" "$IMAGE_VERSION" "$K8S_APT_URL" "$CVMFS_APT_URL" \
  "$(sha256sum <"$here/../local-disks/beowulf-disks")")
if [ "${FORCE:-0}" != 1 ] && [ -f "$out/.recipe-sha256" ] && [ "$(cat "$out/.recipe-sha256")" = "$recipe_hash" ] &&
  (cd "$out" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
  echo "$name image in $out is up to date (recipe $recipe_hash)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap builds the root filesystem in a chroot)"
for tool in mmdebstrap mksquashfs curl; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed: run .ci/install (apt-get install mmdebstrap squashfs-tools curl)"
done

step "checking package sources"
reachable "$DEBIAN_MIRROR/dists/$SUITE/Release" DEBIAN_MIRROR
extra_sources=()
extra_includes=()
if [ "$VARIANT" = full ]; then
  reachable "$DEBIAN_SECURITY_MIRROR/dists/$SUITE-security/Release" DEBIAN_SECURITY_MIRROR
  reachable "$K8S_APT_URL/Release" K8S_APT_URL
  reachable "$CVMFS_APT_URL/dists/$SUITE-prod/Release" CVMFS_APT_URL
  reachable "$SLURM_APT_URL/dists/$SLURM_APT_SUITE/Release" SLURM_APT_URL
  keys=$(mktemp -d)
  curl -fsSL --max-time 30 "$K8S_APT_URL/Release.key" -o "$keys/k8s.asc" || die "cannot fetch $K8S_APT_URL/Release.key"
  curl -fsSL --max-time 30 "$CVMFS_APT_URL/cernvm.gpg" -o "$keys/cvmfs.gpg" || die "cannot fetch $CVMFS_APT_URL/cernvm.gpg"
  extra_sources=(
    "deb $DEBIAN_SECURITY_MIRROR $SUITE-security main"
    "deb [signed-by=/etc/apt/keyrings/k8s.asc] $K8S_APT_URL /"
    "deb [signed-by=/etc/apt/keyrings/cvmfs.gpg] $CVMFS_APT_URL $SUITE-prod main"
  )
  [ "$SLURM_APT_SUITE" != "$SUITE" ] && extra_sources+=("deb $SLURM_APT_URL $SLURM_APT_SUITE main")
  extra_includes=(containerd kubelet kubeadm kubectl cri-tools kubernetes-cni cvmfs openssh-server
    conntrack ethtool socat iptables nfs-common rdma-core)
fi

packages=(
  # kernel and the live initrd
  linux-image-amd64 dracut dracut-core dracut-live dracut-network isc-dhcp-client
  # the node
  systemd systemd-sysv udev cloud-init curl ca-certificates iproute2 procps
  # local disks (images/local-disks/beowulf-disks): mke2fs; blkid and wipefs are util-linux
  e2fsprogs
  sssd-ldap libnss-sss libpam-sss munge slurmd
  # slurmd's cgroup/v2 plugin asks systemd over D-Bus for the scope of its job steps
  dbus
  "${extra_includes[@]}"
)

work=$(mktemp -d /var/tmp/hpc-node.XXXXXX)
trap 'rm -rf "$work" ${keys:-}' EXIT
root=$work/root

step "mmdebstrap $SUITE ($VARIANT): ${packages[*]}"
hooks=(
  # Before any package: the dracut configuration, so the kernel's postinst builds our initrd exactly once.
  --setup-hook="mkdir -p \"\$1/etc/dracut.conf.d\" && cp '$here/dracut.conf' \"\$1/etc/dracut.conf.d/90-beowulf-live.conf\""
  --customize-hook="'$here/customize.sh' \"\$1\" '$VARIANT'"
)
if [ "$VARIANT" = full ]; then
  hooks=(--setup-hook="mkdir -p \"\$1/etc/apt/keyrings\" && cp '$keys'/k8s.asc '$keys'/cvmfs.gpg \"\$1/etc/apt/keyrings/\""
    "${hooks[@]}")
  if [ "$(slurm_suite full)" != "$SUITE" ]; then
    # slurmd from the SLURM source wins over the older one in the base suite.
    hooks+=(--aptopt="APT::Default-Release \"$SUITE\"")
    packages=("${packages[@]/#slurmd/slurmd/$(slurm_suite full)}")
  fi
fi
IFS=,
include="${packages[*]}"
unset IFS
mmdebstrap --quiet --variant=minbase --mode=root --format=directory \
  --include="$include" "${hooks[@]}" \
  "$SUITE" "$root" "deb $DEBIAN_MIRROR $SUITE main" "${extra_sources[@]}" >"$work/mmdebstrap.log" 2>&1 ||
  { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }

kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
# The versions that must agree with services outside the image (SLURM's controller talks only to slurmd of its
# own and the two previous major releases), recorded in image.yaml for the stack's checks.
pkgver() { chroot "$root" dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

[ -n "$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] || die "no kernel/initrd in the image (see the mmdebstrap log)"
step "kernel $kver, root $(du -sxh "$root" | cut -f1); writing the squashfs"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$root/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out.tmp/initrd.img"
# The running node never needs these: the initrd already booted, and kernels are replaced by a new image.
rm -rf "$root"/boot/* "$root/usr/lib/dracut" "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info"
env -u SOURCE_DATE_EPOCH mksquashfs "$root" "$out.tmp/rootfs.squashfs" -noappend -quiet -no-progress -comp zstd -Xcompression-level 6 \
  -b 1M -all-time "$SOURCE_DATE_EPOCH" -mkfs-time "$SOURCE_DATE_EPOCH" -wildcards -e 'proc/*' 'sys/*' 'dev/*' 'run/*' 'tmp/*' \
  >/dev/null

(cd "$out.tmp" && sha256sum vmlinuz initrd.img rootfs.squashfs >SHA256SUMS)
sum() { awk -v f="$1" '$2==f{print $1}' "$out.tmp/SHA256SUMS"; }
cat >"$out.tmp/image.yaml" <<EOF
# The $name node image (images/hpc-node/build.sh, VARIANT=$VARIANT).
name: $name
version: $IMAGE_VERSION
kernelVersion: $kver
suite: $SUITE
recipeSha256: $recipe_hash
files:
  vmlinuz: { sha256: $(sum vmlinuz), size: $(stat -c %s "$out.tmp/vmlinuz") }
  initrd.img: { sha256: $(sum initrd.img), size: $(stat -c %s "$out.tmp/initrd.img") }
  rootfs.squashfs: { sha256: $(sum rootfs.squashfs), size: $(stat -c %s "$out.tmp/rootfs.squashfs") }
packages:
  slurmd: "$(pkgver slurmd)"
  munge: "$(pkgver munge)"
  sssd-ldap: "$(pkgver sssd-ldap)"
  cloud-init: "$(pkgver cloud-init)"
  cvmfs: "$(pkgver cvmfs)"
cmdline: >-
  console=ttyS0,115200 BOOTIF={{ bootif }} ip=dhcp rd.neednet=1
  root=live:{{ rootfs_url }} rd.live.overlay.overlayfs=1 ds=nocloud-net;s={{ nocloud_url }}
EOF
echo "$recipe_hash" >"$out.tmp/.recipe-sha256"
rm -rf "$out"
mv "$out.tmp" "$out"
step "$name image in $out"
ls -l "$out"
