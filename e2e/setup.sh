#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests (make e2e) need on the
# host: qemu and OVMF to boot the disk, GRUB's EFI modules to build the
# bootloader, busybox/dmsetup/kmod/e2fsprogs to build the guest's initramfs
# (the test writes the cpio archive itself) and root images. Idempotent:
# only missing packages are installed. The guest kernel is not installed on
# the host: the test downloads it with 'apt-get download' into its cache.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=(
  qemu-system-x86      # qemu-system-x86_64
  ovmf                 # /usr/share/ovmf/OVMF.fd
  grub-efi-amd64-bin   # x86_64-efi modules for grub-mkstandalone
  grub-common          # grub-mkstandalone; grub-editenv reads the env back
  busybox-static       # the guest's shell and tools (initramfs and root)
  dmsetup              # sets up the dm-verity root in the initramfs
  kmod                 # depmod -b for the downloaded kernel's modules
  e2fsprogs            # mke2fs -d for the root images
  systemd-boot-efi     # systemd-bootx64.efi for the sdboot scenarios
  mmdebstrap           # the node scenarios' Debian root (cmd/sealift/image/build-root.sh)
  iproute2             # lo in the node scenarios' network namespace
  util-linux           # unshare and nsenter for that namespace
  docker-registry      # the registry the node's agent pulls from
  etcd-server          # the FleetLock server's store
)
export DEBIAN_FRONTEND=noninteractive
# Always: the test's 'apt-cache depends' and 'apt-get download' of the
# kernel need current package lists even when every package is present
# (an old list names a kernel build the mirror no longer has).
$SUDO apt-get update -q
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
