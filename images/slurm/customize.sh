#!/usr/bin/env bash
# mmdebstrap customize hook of images/slurm/build.sh: records the package versions, drops what an image must
# not carry (secrets, host keys, caches, logs) and adds the login container's command.
# usage: customize.sh ROOT PACKAGES_FILE
set -euo pipefail
root=$1
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' >"$2"

# munge's postinst made a key and openssh-server's host keys: secrets shared by everyone who has the image.
# The munge key comes from the stack's Secret; host keys are made when a login container starts.
rm -f "$root/etc/munge/munge.key" "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/var/lib/dpkg/*-old "$root/var/cache/ldconfig/aux-cache"
find "$root/var/log" -type f -delete

# The image's default command (containers with none, the login pod's): sssd for the directory's users when the
# pod gave it a configuration, then sshd in the foreground.
install -D -m 0755 /dev/stdin "$root/usr/local/sbin/login" <<'SH'
#!/bin/sh
set -e
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
[ ! -f /etc/sssd/sssd.conf ] || sssd -D
exec /usr/sbin/sshd -D -e
SH
