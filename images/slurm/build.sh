#!/usr/bin/env bash
# Builds the SLURM controller image the HPC stack's slurm addon runs (slurmctld, slurmdbd, the login pod and
# their munged sidecars): Debian packages from the same source as the node image's slurmd
# (images/package-sources.sh), so controller and nodes of one VARIANT agree by construction. Written as an OCI
# image layout without a container engine: one gzip layer (mmdebstrap's reproducible tarball), an image config,
# a manifest and an index.
#
# usage: images/slurm/build.sh [OUT_DIR]
#   VARIANT=ci    (default) SLURM of Debian's base suite (bookworm: 22.05), as the CI node image
#   VARIANT=full  SLURM of $SLURM_APT_SUITE (bookworm-backports), as the full node image
# output: OUT_DIR/{oci-layout,index.json,blobs/sha256/…,image.yaml}
#         (default OUT_DIR: ${CARGO_TARGET_DIR:-target}/images/slurm-$VARIANT)
# Push it with any OCI tool that reads a layout, e.g. `skopeo copy oci:OUT_DIR:TAG docker://REGISTRY/slurm:TAG`,
# and set the stack's `images.*.repository` and `digest` (the digest is in image.yaml).
#
# The same recipe and the same package versions give the same digest: SOURCE_DATE_EPOCH fixes every mtime
# (mmdebstrap's tarball is reproducible with it), gzip stores no name or time, the JSON has a fixed key order
# and no creation time. The package versions are what the mirror serves on the day (pin a snapshot.debian.org
# mirror for bit-identical rebuilds). A finished build records the recipe hash; running again with the same
# recipe and intact output reuses it ("up to date"). FORCE=1 rebuilds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

VARIANT=${VARIANT:-ci}
. "$here/../package-sources.sh"
slurm_suite=$(slurm_suite "$VARIANT") || exit 2
# The image's version (the HPC stack's slurm values name it); the CI variant's tag has `-ci` appended.
IMAGE_VERSION=${IMAGE_VERSION:-1.0.0}
name=slurm-$VARIANT
tag=$IMAGE_VERSION
[ "$VARIANT" = full ] || tag=$IMAGE_VERSION-$VARIANT
out=${1:-${CARGO_TARGET_DIR:-$repo/target}/images/$name}

recipe_hash=$(recipe_hash "$here" "$VARIANT" "$IMAGE_VERSION")
intact() { # every blob the layout names is there with its digest
  [ -f "$out/index.json" ] && (cd "$out/blobs/sha256" && for f in *; do echo "$f  $f"; done | sha256sum --quiet -c >/dev/null 2>&1)
}
if [ "${FORCE:-0}" != 1 ] && [ -f "$out/.recipe-sha256" ] && [ "$(cat "$out/.recipe-sha256")" = "$recipe_hash" ] && intact; then
  echo "$name image in $out is up to date (recipe $recipe_hash)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap installs the packages in a chroot)"
for tool in mmdebstrap curl gzip sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed: run .ci/install (apt-get install mmdebstrap curl)"
done
reachable "$DEBIAN_MIRROR/dists/$SUITE/Release" DEBIAN_MIRROR
sources=("deb $DEBIAN_MIRROR $SUITE main")
slurm_pkgs=(slurmctld slurmdbd slurm-client)
aptopts=()
if [ "$slurm_suite" != "$SUITE" ]; then
  reachable "$SLURM_APT_URL/dists/$slurm_suite/Release" "SLURM_APT_URL or SLURM_APT_SUITE"
  sources+=("deb $SLURM_APT_URL $slurm_suite main")
  aptopts=(--aptopt="APT::Default-Release \"$SUITE\"")
  slurm_pkgs=("${slurm_pkgs[@]/%//$slurm_suite}")
fi
packages=(
  "${slurm_pkgs[@]}" munge
  # the login pod: users from the directory (sssd), logins over SSH
  sssd-ldap libnss-sss libpam-sss openssh-server
  ca-certificates
)

work=$(mktemp -d /var/tmp/slurm-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

step "mmdebstrap $SUITE (SLURM from $slurm_suite): ${packages[*]}"
IFS=,
include="${packages[*]}"
unset IFS
mmdebstrap --quiet --variant=essential --mode=root --format=tar \
  --include="$include" "${aptopts[@]}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="'$here/customize.sh' \"\$1\" '$work/packages'" \
  "$SUITE" "$work/layer.tar" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1 ||
  { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }

step "layer $(du -h "$work/layer.tar" | cut -f1) uncompressed; writing the OCI layout"
rm -rf "$out.tmp"
mkdir -p "$out.tmp/blobs/sha256"
blob() { # FILE -> its digest; moves it into the layout
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$out.tmp/blobs/sha256/$d"
  echo "$d"
}
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 "$work/layer.tar"
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")

ver() { awk -v p="$1" '$1==p{print $2}' "$work/packages"; }
slurm_version=$(ver slurmctld)
[ -n "$slurm_version" ] || die "slurmctld is not in the image (see the mmdebstrap log)"
source_url=https://github.com/beowulf-hpc/beowulf
# Fixed key order, no creation time: the same inputs give the same bytes.
printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"/usr/local/sbin/login\"],\"Labels\":{\"org.opencontainers.image.source\":\"$source_url\",\"org.opencontainers.image.version\":\"$tag\",\"io.beowulf.slurm.version\":\"$slurm_version\"}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}}" >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(blob "$work/config.json")
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}],\"annotations\":{\"org.opencontainers.image.source\":\"$source_url\",\"org.opencontainers.image.version\":\"$tag\"}}" >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(blob "$work/manifest.json")
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}]}" >"$out.tmp/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$out.tmp/oci-layout"

cat >"$out.tmp/image.yaml" <<EOF
# The SLURM controller image (images/slurm/build.sh, VARIANT=$VARIANT).
name: slurm
version: $tag
variant: $VARIANT
suite: $SUITE
slurmSuite: $slurm_suite
recipeSha256: $recipe_hash
# The image manifest: what the stack's values pin (repository@digest).
digest: sha256:$manifest
layer: { digest: sha256:$layer, size: $layer_size, diffId: sha256:$diff_id }
packages:
  slurmctld: "$(ver slurmctld)"
  slurmdbd: "$(ver slurmdbd)"
  slurm-client: "$(ver slurm-client)"
  munge: "$(ver munge)"
  sssd-ldap: "$(ver sssd-ldap)"
EOF
echo "$recipe_hash" >"$out.tmp/.recipe-sha256"
rm -rf "$out"
mv "$out.tmp" "$out"
step "$name image in $out: sha256:$manifest (slurmctld $slurm_version, layer $((layer_size / 1048576)) MiB)"
