# Sourced by images/hpc-node/build.sh and images/slurm/build.sh: where the packages of both images come from,
# and the recipe helpers both use (log lines, source checks, the recipe's hash).
# SLURM's controller talks only to slurmd of its own and the two previous major releases. The nodes' slurmd
# (hpc-node) and the controller's slurmctld/slurmdbd (slurm) are installed from the same suite of the same
# mirror by the same VARIANT, so a controller and the nodes built with it agree by construction.
SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# SchedMD publishes SLURM as source tarballs only; Debian's backports carry current releases as packages.
# VARIANT=ci takes the base suite's SLURM (Debian 12: 22.05), VARIANT=full this suite's.
SLURM_APT_URL=${SLURM_APT_URL:-$DEBIAN_MIRROR}
SLURM_APT_SUITE=${SLURM_APT_SUITE:-$SUITE-backports}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600} # 2025-01-01T00:00:00Z
export SOURCE_DATE_EPOCH

# The suite SLURM comes from for VARIANT ($1).
slurm_suite() {
  case "$1" in
    ci) echo "$SUITE" ;;
    full) echo "$SLURM_APT_SUITE" ;;
    *) echo "VARIANT must be ci or full, not '$1'" >&2; return 2 ;;
  esac
}

# What identifies these sources in a recipe hash.
package_sources_id() {
  echo "$SUITE $DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR $SLURM_APT_URL $SLURM_APT_SUITE $SOURCE_DATE_EPOCH"
}

die() { echo "$(basename "$(dirname "$0")") build: $*" >&2; exit 1; }
t0=$(date +%s)
step() { echo "==> [$(( $(date +%s) - t0 ))s] $*"; }

# Every source must answer before a build spends minutes downloading: say which one does not, and how to
# redirect it.
reachable() { # URL VARIABLE
  curl -fsSL --max-time 20 -o /dev/null "$1" ||
    die "package source unreachable: $1 (set $2 to a reachable mirror; see images/package-sources.sh)"
}

# A recipe's identity: every file of the recipe directory ($1) but its documentation, these sources, and
# whatever else the recipe varies by (the other arguments).
recipe_hash() {
  local dir=$1
  shift
  {
    (cd "$dir" && find . -type f ! -name '*~' ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    sha256sum <"${BASH_SOURCE[0]}"
    echo "$* $(package_sources_id)"
  } | sha256sum | cut -d' ' -f1
}
