#!/usr/bin/env bash
# mmdebstrap customize hook of images/hpc-node/build.sh: turns the installed root into a stateless live node.
# usage: customize.sh ROOT VARIANT
set -euo pipefail
root=$1
variant=$2
here=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$root" "$@"; }

kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
# The kernel's postinst builds the initrd when dracut was configured first; otherwise build it now.
[ -f "$root/boot/initrd.img-$kver" ] || in_root dracut --force "/boot/initrd.img-$kver" "$kver"
grep -q livenet <(in_root lsinitrd "/boot/initrd.img-$kver" 2>/dev/null) ||
  in_root dracut --force "/boot/initrd.img-$kver" "$kver"

# Kernel modules a node never loads: sound, video capture, radios, staging; the CI variant also drops GPUs and
# InfiniBand (the full variant keeps them for compute nodes).
mods=$root/lib/modules/$kver/kernel
prune=(sound drivers/media drivers/net/wireless drivers/bluetooth net/bluetooth net/mac80211 net/wireless
  drivers/staging drivers/isdn drivers/iio drivers/comedi)
[ "$variant" = ci ] && prune+=(drivers/gpu drivers/infiniband net/rds drivers/net/ethernet/mellanox)
for d in "${prune[@]}"; do rm -rf "${mods:?}/$d"; done
in_root depmod -a "$kver"

# Identity comes from the boot, not the image: systemd makes a machine-id per boot (empty file = first boot
# semantics without writing it back), cloud-init names the host from the NoCloud meta-data.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo localhost >"$root/etc/hostname"
# munge's postinst made a key: a key baked into an image is shared by everyone who has the image. The real key
# comes with the user-data; munged starts once it is there.
rm -f "$root/etc/munge/munge.key"
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/munge.service.d/10-beowulf.conf" <<'UNIT'
[Unit]
# The key arrives with cloud-init's user-data (write_files); start munged after that.
ConditionPathExists=/etc/munge/munge.key
After=cloud-config.service
UNIT

# slurmd: Debian's unit starts only with /etc/slurm/slurm.conf, which a configless node (`slurmd --conf-server`
# in /etc/default/slurmd, the stack's compute user-data) never has: it would never start. What a node of a
# cluster always has is the munge key from its user-data; start after cloud-init wrote it.
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/slurmd.service.d/10-beowulf.conf" <<'UNIT'
[Unit]
ConditionPathExists=
ConditionPathExists=/etc/munge/munge.key
After=cloud-config.service
UNIT

# Local disks (docs/architecture.md, "Local disks"): the agent formats blank declared disks, mounts ours and
# leaves anything else alone, before anything that keeps data there starts (etcd under kubelet, containerd,
# slurmd's spool, cloud-init). It runs only when the boot plane put `beowulf.disk=` on the command line; the
# network the initrd configured is still up, so its report reaches the boot plane.
install -D -m 0755 "$here/../local-disks/beowulf-disks" "$root/usr/sbin/beowulf-disks"
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/beowulf-disks.service" <<'UNIT'
[Unit]
Description=Beowulf local disks: format when blank, mount ours, report
DefaultDependencies=no
ConditionKernelCommandLine=beowulf.disk
# udev's coldplug loads the disk drivers; the agent waits up to 10 s for each disk to appear.
After=systemd-udev-trigger.service systemd-remount-fs.service
Before=local-fs.target cloud-init-local.service containerd.service kubelet.service slurmd.service munge.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/beowulf-disks
StandardOutput=journal+console

[Install]
WantedBy=local-fs.target
UNIT
in_root systemctl enable beowulf-disks.service >/dev/null 2>&1

# Network: the initrd configured the boot NIC by DHCP; systemd-networkd takes the lease over (renewals) for
# every wired NIC. cloud-init does not render network configuration (the NoCloud seed is fetched over the
# network, after the point where cloud-init could apply one).
install -D -m 0644 /dev/stdin "$root/etc/systemd/network/80-beowulf-dhcp.network" <<'NET'
[Match]
Type=ether
Name=!veth* !docker* !cni* !flannel* !cali* !vxlan* !tunl*

[Network]
DHCP=ipv4
KeepConfiguration=dhcp
NET
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/10-beowulf.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
UNIT
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1

install -D -m 0644 /dev/stdin "$root/etc/cloud/cloud.cfg.d/90-beowulf.cfg" <<'CFG'
#cloud-config
# Beowulf live node: data comes from the boot plane's NoCloud seed (ds=nocloud-net;s=<url> on the kernel
# command line: cloud-init 22.4 only fetches http seeds for nocloud-net).
datasource_list: [NoCloud, None]
network: {config: disabled}
# No disk to grow, no packages to install on a stateless node.
growpart: {mode: "off"}
resize_rootfs: false
package_update: false
package_upgrade: false
# Built in, nothing to generate; no SSH server in the CI variant (the full one brings its own keys per boot).
locale: C.UTF-8
no_ssh_fingerprints: true
CFG
# Servers have no floppy drive; on QEMU, cloud-init's search for a NoCloud disk otherwise waits on fd0's I/O errors.
echo "blacklist floppy" >"$root/etc/modprobe.d/beowulf-live.conf"
# sssd's socket-activated responders fail their dependency while sssd.service waits for its configuration;
# sssd.conf's `services =` starts the responders it needs.
rm -rf "$root/etc/systemd/system/sssd.service.wants"

# Units that cost boot time and do nothing on a stateless node.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  systemd-timesyncd.service man-db.timer dpkg-db-backup.timer remote-fs.target; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done

# Nothing from the build may stay in the image: logs, apt's lists and caches, the resolver config of the builder.
# The log files go, the directories stay: munged does not start without its /var/log/munge (munge:munge).
find "$root/var/log" -type f -delete
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/tmp/* "$root"/var/tmp/* "$root"/var/cache/ldconfig/aux-cache "$root"/etc/ssh/ssh_host_*
: >"$root/etc/resolv.conf"
echo "customized ($variant): kernel $kver, modules $(du -sh "$root/lib/modules/$kver" | cut -f1)"
