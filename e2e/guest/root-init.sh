#!/bin/sh
# sealift e2e root /sbin/init (runs from the dm-verity root). Prints
# markers on the console, checks that its own files read back through
# dm-verity, runs the steps of /etc/sealift-e2e/steps and powers off. A
# failed check reboots without marking the slot good.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ TERM=dumb
# The initramfs moves its /proc, /sys and /dev here; mount them if it did not.
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "SEALIFT-E2E: $*"; }
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1"=*) echo "${a#*=}"; return;; esac; done; }
slot=$(arg sealift.slot); ver=$(. /etc/os-release; echo "$VERSION_ID")
say "booted slot=$slot version=$ver uptime=$(up)"
# systemd-boot names the entry it booted in an EFI variable (GRUB does not).
ev=/sys/firmware/efi/efivars
if [ -d $ev ] && { [ -n "$(ls $ev 2>/dev/null)" ] || mount -t efivarfs efivarfs $ev 2>/dev/null; }; then
  sel=$(tail -c +5 $ev/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f 2>/dev/null | tr -d '\0')
  [ -n "$sel" ] && say "loader entry=$sel"
fi

# What / is: its device, and for device-mapper the name and the devices below.
rdev=$(awk '$5 == "/" { print $3 }' /proc/self/mountinfo | tail -1)
rname=$(basename "$(readlink -f /sys/dev/block/$rdev)")
dmname=$(cat /sys/dev/block/$rdev/dm/name 2>/dev/null)
slaves=$(ls /sys/dev/block/$rdev/slaves 2>/dev/null | tr '\n' ' ')
say "root dev=$rname dm=${dmname:-none} slaves=${slaves% } fstype=$(awk '$2 == "/" { print $3 }' /proc/mounts | tail -1)"

# Health: every byte of the payload must read back through dm-verity.
if err=$(cat /usr/share/sealift-e2e/payload.bin 2>&1 >/dev/null); then
  say "health ok"
else
  say "health failed: $err"
  say "rebooting without marking slot $slot good"
  sync; reboot -f; sleep 10
fi

# STATE (partition label STATE) holds /var.
for u in /sys/class/block/*/uevent; do
  if grep -qx 'PARTNAME=STATE' "$u"; then st=/dev/$(grep '^DEVNAME=' "$u" | cut -d= -f2); fi
done
# The initramfs mounts it (and the /etc overlay on it); mount it here only
# if it did not.
if grep -q " /var " /proc/mounts; then say "var mounted by the initramfs"
elif [ -n "$st" ] && mount -t ext4 "$st" /var; then say "var mounted from $st"; else say "var not mounted (STATE=${st:-missing})"; fi

n=0
while IFS= read -r step; do
  case "$step" in ''|'#'*) continue;; esac
  n=$((n+1))
  say "step $n: $step"
  sh -c "$step" </dev/null
  say "step $n rc=$?"
done < /etc/sealift-e2e/steps
grep -q " /etc " /proc/mounts && umount /etc
grep -q " /var " /proc/mounts && umount /var
sync
say "done slot=$slot version=$ver uptime=$(up)"
poweroff -f
