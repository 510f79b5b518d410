#!/bin/busybox sh
# sealift e2e initramfs /init: opens the slot named on the kernel command
# line (sealift.root=PARTUUID=..., sealift.verity.*) as a dm-verity device,
# mounts it read-only and switches into it. Any failure reboots, which under
# qemu -no-reboot ends the boot: the bootloader's try counter decides what
# the next boot runs.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin DM_DISABLE_UDEV=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "SEALIFT-E2E-INITRD: $*"; }
fail() { say "FAIL: $*"; sync; reboot -f; sleep 10; }
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1"=*) echo "${a#*=}"; return;; esac; done; }

say "start uptime=$(up) cmdline: $(cat /proc/cmdline)"
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done

ROOT=$(arg sealift.root); RH=$(arg sealift.verity.roothash); SALT=$(arg sealift.verity.salt)
NB=$(arg sealift.verity.datablocks); HO=$(arg sealift.verity.hashoffset)
[ -n "$ROOT" ] && [ -n "$RH" ] && [ -n "$SALT" ] && [ -n "$NB" ] && [ -n "$HO" ] \
  || fail "missing sealift.root or sealift.verity.* on the kernel command line"
case "$ROOT" in PARTUUID=*) want=$(echo "${ROOT#PARTUUID=}" | tr A-F a-f);; *) fail "unsupported sealift.root=$ROOT";; esac
[ $((HO % 4096)) = 0 ] || fail "sealift.verity.hashoffset=$HO is not a multiple of 4096"

# gpt_guids DISK: "N guid" for each used entry of the disk's GPT (N is the
# kernel's partition number). The kernel does not put PARTUUID in uevent
# (6.1), there is no udev here, and busybox blkid does not read GPT, so
# the table is read with od and decoded with awk.
gpt_guids() {
  gd=$1
  ss=$(cat /sys/block/$gd/queue/logical_block_size)
  set -- $(od -A n -t x1 -v -j "$ss" -N 92 /dev/$gd)
  [ "$1$2$3$4$5$6$7$8" = 4546492050415254 ] || return 0 # "EFI PART"
  shift 72 # entry array LBA (8 bytes), entry count (4), entry size (4), little-endian
  lba=$((0x$8$7$6$5$4$3$2$1)); n=$((0x${12}${11}${10}$9)); esz=$((0x${16}${15}${14}${13}))
  od -A n -t x1 -v -j $((lba * ss)) -N $((n * esz)) /dev/$gd | awk -v esz="$esz" '
    { for (i = 1; i <= NF; i++) b[k++] = $i }
    END {
      for (e = 0; e * esz < k; e++) {
        o = e * esz; used = 0
        for (i = 0; i < 16; i++) if (b[o + i] != "00") used = 1
        if (!used) continue
        u = o + 16
        printf "%d %s%s%s%s-%s%s-%s%s-%s%s-", e + 1, b[u+3], b[u+2], b[u+1], b[u], b[u+5], b[u+4], b[u+7], b[u+6], b[u+8], b[u+9]
        for (i = 10; i < 16; i++) printf "%s", b[u + i]
        printf "\n"
      }
    }'
}
# find_partuuid GUID: the kernel name of the partition with that unique GUID.
find_partuuid() {
  for sys in /sys/block/*; do
    disk=${sys##*/}
    case $disk in loop*|ram*|dm-*|sr*) continue;; esac
    gpt_guids "$disk" | while read -r num guid; do
      [ "$guid" = "$1" ] || continue
      for p in /sys/block/$disk/*/partition; do
        [ "$(cat "$p")" = "$num" ] && { d=${p%/partition}; echo "${d##*/}"; }
      done
    done
  done
}
# Disks may appear a little after the modules are loaded.
dev=""; i=0
while [ -z "$dev" ] && [ $i -lt 50 ]; do
  dev=$(find_partuuid "$want" | head -1)
  [ -n "$dev" ] || { sleep 0.2; i=$((i+1)); }
done
[ -n "$dev" ] || fail "no partition with PARTUUID=$want (disks: $(ls /sys/block | tr '\n' ' '); GPT of vda: $(gpt_guids vda | tr '\n' ' '))"
say "root partition /dev/$dev (PARTUUID=$want) uptime=$(up)"

table="0 $((NB * 8)) verity 1 /dev/$dev /dev/$dev 4096 4096 $NB $((HO / 4096)) sha256 $RH $SALT"
dmsetup create root --readonly --table "$table" || fail "dmsetup create root failed (table: $table)"
say "verity table: $(dmsetup table root)"
say "verity status: $(dmsetup status root)"
mkdir -p /newroot
mount -t ext4 -o ro /dev/mapper/root /newroot || fail "mount of /dev/mapper/root failed"
# An absolute symlink (systemd's /sbin/init) resolves only inside the root.
[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "no /sbin/init in the root filesystem"

# The node's writable places (docs/node-image.md): STATE on /var, and an
# overlay on /etc whose upper layer lives on STATE, both before the root's
# init starts, since systemd reads and writes /etc from its first step.
st=""
for u in /sys/class/block/*/uevent; do
  grep -qx 'PARTNAME=STATE' "$u" && st=$(grep '^DEVNAME=' "$u" | cut -d= -f2)
done
[ -n "$st" ] || fail "no partition labelled STATE"
mount -t ext4 "/dev/$st" /newroot/var || fail "mount of STATE (/dev/$st) on /var failed"
mkdir -p /newroot/var/lib/sealift-etc/upper /newroot/var/lib/sealift-etc/work
mount -t overlay overlay -o lowerdir=/newroot/etc,upperdir=/newroot/var/lib/sealift-etc/upper,workdir=/newroot/var/lib/sealift-etc/work /newroot/etc \
  || fail "mount of the /etc overlay failed"
say "var mounted from /dev/$st, /etc overlaid"
say "switching root uptime=$(up)"
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /sbin/init
