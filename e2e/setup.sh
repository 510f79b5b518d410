#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests (make e2e) need on the
# host: qemu and OVMF to boot the disk, GRUB's EFI modules to build the
# bootloader, busybox/dmsetup/kmod/cpio to build the guest's initramfs and
# root, and the tools the test reads the disk with. Idempotent: only missing
# packages are installed. The guest kernel is not installed on the host: the
# test downloads it with 'apt-get download' into its cache.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=(
  qemu-system-x86      # qemu-system-x86_64
  ovmf                 # /usr/share/ovmf/OVMF.fd
  grub-efi-amd64-bin   # x86_64-efi modules for grub-mkstandalone
  grub-common          # grub-mkstandalone, grub-editenv
  busybox-static       # the guest's shell and tools (initramfs and root)
  dmsetup              # sets up the dm-verity root in the initramfs
  kmod                 # depmod -b for the downloaded kernel's modules
  cpio                 # the initramfs archive
  gzip
  e2fsprogs            # mke2fs -d for the root images
  mtools gdisk         # inspect the disk on failures
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# apt-get download of the kernel needs fresh package lists even when every
# package above is present.
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  $SUDO apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
