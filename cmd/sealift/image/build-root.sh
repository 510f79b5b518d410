#!/usr/bin/env bash
# build-root.sh: builds the root filesystem image of a sealift node from
# Debian packages: a minimal systemd system whose / is read-only (it is
# mounted from a dm-verity device), with /var on the STATE partition, /etc
# an overlay kept on STATE, and sealift's units installed and enabled.
# 'sealift release build' takes the image it writes. docs/node-image.md
# explains every step; the e2e tests boot exactly what this script builds.
#
#   build-root.sh --version 1.4.0 --sealift bin/sealift \
#       --config config.toml --trust-root root.json [options] OUT.img
#   build-root.sh --install-only ROOT --sealift ... --config ... --trust-root ...
#
# Runs as root (the tree keeps the packages' owners and device nodes).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: build-root.sh [options] OUT.img
       build-root.sh --install-only ROOT [options]

required:
  --sealift FILE      the static sealift binary (installed as /usr/bin/sealift)
  --config FILE       the node's config (/etc/sealift/config.toml)
  --trust-root FILE   the TUF root.json the node trusts (/usr/share/sealift/root.json)
  --version V         the release version, recorded as IMAGE_VERSION in os-release

options:
  --suite NAME        Debian suite (default bookworm)
  --mirror URL        Debian mirror (default: mmdebstrap's, deb.debian.org)
  --include PKGS      more packages, comma-separated (always: systemd, systemd-sysv, udev, kmod, usr-is-merged)
                      (the bootstrap is cached by package list, not date: clear --cache
                      to pick up Debian's updates)
  --overlay DIR       copy DIR's tree onto the root after the packages (repeatable);
                      kernel modules under lib/modules/VERSION get their depmod
  --enable UNIT       systemctl enable UNIT in the root (repeatable)
  --image-id ID       IMAGE_ID in os-release (default sealift-node)
  --cache DIR         keep the package bootstrap here and reuse it while the suite,
                      mirror and package list stay the same
  --install-only ROOT only install sealift into the existing tree ROOT
EOF
}

die() { echo "build-root.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNITS=$here/../systemd
suite=bookworm mirror="" include="" image_id=sealift-node cache="" install_only=""
SEALIFT="" CONFIG="" TRUST_ROOT="" version="" out=""
overlays=() enables=()
while [ $# -gt 0 ]; do
	case $1 in
	--sealift) SEALIFT=$2; shift 2 ;;
	--config) CONFIG=$2; shift 2 ;;
	--trust-root) TRUST_ROOT=$2; shift 2 ;;
	--version) version=$2; shift 2 ;;
	--suite) suite=$2; shift 2 ;;
	--mirror) mirror=$2; shift 2 ;;
	--include) include=$2; shift 2 ;;
	--overlay) overlays+=("$2"); shift 2 ;;
	--enable) enables+=("$2"); shift 2 ;;
	--image-id) image_id=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--install-only) install_only=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) [ -z "$out" ] || die "one output image, not '$out' and '$1'"; out=$1; shift ;;
	esac
done
for v in SEALIFT CONFIG TRUST_ROOT; do
	[ -n "${!v}" ] || { usage >&2; die "--$(echo "$v" | tr A-Z_ a-z-) is required"; }
	[ -f "${!v}" ] || die "--$(echo "$v" | tr A-Z_ a-z-) ${!v}: no such file"
done
for u in sealift-boot-check.service sealift-health.service sealift-agent.service; do
	[ -f "$UNITS/$u" ] || die "$UNITS/$u is missing (run the script from a sealift checkout)"
done
for d in ${overlays[@]+"${overlays[@]}"}; do [ -d "$d" ] || die "--overlay $d: no such directory"; done

# install_sealift ROOT: the binary, its units (enabled as their [Install]
# sections say), the config and the trust anchor. docs/node-image.md
# shows these lines verbatim; a test compares the two.
install_sealift() {
	local ROOT=$1
	# >>> install sealift
	install -D -m 0755 "$SEALIFT" "$ROOT/usr/bin/sealift"
	install -D -m 0644 -t "$ROOT/usr/lib/systemd/system" \
		"$UNITS/sealift-boot-check.service" "$UNITS/sealift-health.service" "$UNITS/sealift-agent.service"
	systemctl --root="$ROOT" enable sealift-boot-check.service sealift-health.service sealift-agent.service
	install -D -m 0644 "$CONFIG" "$ROOT/etc/sealift/config.toml"
	install -D -m 0644 "$TRUST_ROOT" "$ROOT/usr/share/sealift/root.json"
	# <<< install sealift
}

if [ -n "$install_only" ]; then
	[ -d "$install_only" ] || die "--install-only $install_only: no such directory"
	install_sealift "$install_only"
	exit 0
fi

[ -n "$out" ] || { usage >&2; die "no output image given"; }
[ -n "$version" ] || die "--version is required"
[ "$(id -u)" = 0 ] || die "run as root: the root tree keeps the packages' owners"
for t in mmdebstrap mke2fs systemctl depmod; do
	command -v "$t" >/dev/null || die "$t not found (Debian packages mmdebstrap, e2fsprogs, systemd, kmod)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/sealift-build-root.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The packages. 'essential' is Debian's smallest variant: no apt, no
# package manager on the node, as a container OS has none. Documentation
# and translations are left out; nothing on a node reads them. /usr is
# merged by mmdebstrap's hook and usr-is-merged says so; otherwise apt
# picks usrmerge, which brings perl (a third of the image).
pkgs="systemd,systemd-sysv,udev,kmod,usr-is-merged${include:+,$include}"
hooks=/usr/share/mmdebstrap/hooks/merged-usr
[ -d "$hooks" ] || die "$hooks is missing (Debian package mmdebstrap)"
mmargs=(--variant=essential --include="$pkgs" --hook-dir="$hooks"
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-include=/usr/share/doc/*/copyright'
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
	"$suite")
base=$work/base.tar
if [ -n "$cache" ]; then
	mkdir -p "$cache"
	key=$(printf '%s\n' "${mmargs[@]}" "$mirror" "$(mmdebstrap --version)" "$(dpkg --print-architecture)" | sha256sum | cut -c1-16)
	base=$cache/base-$suite-$key.tar
fi
if [ ! -f "$base" ]; then
	echo "build-root.sh: bootstrapping $suite with $pkgs" >&2
	tmp=$(mktemp "$base.XXXXXX")
	mmdebstrap --quiet --format=tar "${mmargs[@]}" "$tmp" ${mirror:+"$mirror"} || { rm -f "$tmp"; exit 1; }
	mv "$tmp" "$base"
fi
ROOT=$work/root
mkdir "$ROOT"
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"

# 2. The node's filesystems (docs/node-image.md): / is the read-only
# verity device; the initramfs mounts STATE on /var and an overlay on
# /etc (upper layer on STATE) before systemd starts, so that systemd reads
# a writable /etc from its first instruction. fstab names them so that
# systemd knows them; /tmp is a tmpfs as nothing else is writable.
cat >"$ROOT/etc/fstab" <<'EOF'
# / is the running slot's dm-verity device, mounted read-only by the initramfs.
# /var is the STATE partition; /etc is an overlay whose upper layer is in
# /var/lib/sealift-etc. The initramfs mounts both before systemd starts.
PARTLABEL=STATE  /var  ext4   defaults                  0 0
tmpfs            /tmp  tmpfs  mode=1777,nosuid,nodev    0 0
EOF
# An empty machine-id: systemd makes one at the first boot and keeps it in
# /etc's upper layer, so every node has its own (the fleet lock's node id
# comes from it).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

# 3. sealift.
install_sealift "$ROOT"

# 4. The vendor's own files and units.
# Copied as root's files, into the image's directories and through its
# symlinks (lib -> usr/lib): the builder's own uid must not end up owning
# / or /etc on the node.
for d in ${overlays[@]+"${overlays[@]}"}; do
	tar -C "$d" -cf - . | tar -C "$ROOT" -xpf - --owner=0 --group=0 --numeric-owner \
		--no-overwrite-dir --keep-directory-symlink
done
for kv in "$ROOT"/lib/modules/*; do
	[ -d "$kv" ] && depmod -b "$ROOT" "$(basename "$kv")"
done
for u in ${enables[@]+"${enables[@]}"}; do
	systemctl --root="$ROOT" enable "$u"
done

# 5. What this image is.
osr=$ROOT/usr/lib/os-release
[ -f "$osr" ] || die "the root has no /usr/lib/os-release"
sed -i '/^IMAGE_ID=/d; /^IMAGE_VERSION=/d' "$osr"
printf 'IMAGE_ID=%s\nIMAGE_VERSION=%s\n' "$image_id" "$version" >>"$osr"

# 6. The image: ext4 without a journal (it is only ever mounted
# read-only), 4096-byte blocks, sized to the tree with a little room for
# the filesystem's own metadata; a multiple of 4096 bytes as sealift needs.
kib=$(du -s --block-size=1024 "$ROOT" | cut -f1)
blocks=$(((kib * 110 / 100 + 16384) / 4))
rm -f "$out"
mke2fs -q -F -t ext4 -b 4096 -O ^has_journal -m 0 -L root -d "$ROOT" "$out" "$blocks"
echo "build-root.sh: $out: $((blocks * 4096 / 1048576)) MiB, $version" >&2
