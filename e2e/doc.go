// Package e2e boots disks that sealift built under qemu + OVMF with a real
// kernel and a dm-verity root, and checks A/B updates from the serial
// console and from the disk after shutdown. The tests carry the build tag
// e2e; run them with 'make e2e' after 'bash e2e/setup.sh'. Environment:
//
//	SEALIFT_E2E_CACHE         cache dir (default $TMPDIR/sealift-e2e-cache)
//	SEALIFT_E2E_KVM=1         use KVM (default: TCG, as CI runs)
//	SEALIFT_E2E_BOOT_TIMEOUT  seconds per boot (default 180)
//	SEALIFT_E2E_KERNEL_PKG    kernel package instead of the cloud metapackage's
//	SEALIFT_E2E_OVMF          firmware (default /usr/share/ovmf/OVMF.fd)
//	SEALIFT_E2E_KEEP=1        keep this run's disks and serial logs
//
// The guest's scripts are in guest/: the initramfs /init opens the slot
// named by sealift.root= and sealift.verity.* as a dm-verity device and
// switches into it; the root's /sbin/init prints SEALIFT-E2E markers, checks
// that its payload reads back, runs /etc/sealift-e2e/steps and powers off.
//
// The node scenarios (node_test.go, TestNode*) boot the node as it ships
// instead: a Debian root with systemd built by cmd/sealift/image/build-root.sh
// (the bootstrap cached in the cache dir), sealift's units installed by
// that script, and the agent updating the node by itself from Debian's
// docker-registry over qemu's user-mode network, with the reboot slot
// from 'sealift fleetlock serve' on etcd. Registry, etcd, FleetLock server
// and qemu run in a network namespace with only lo up (lab_test.go); the
// guest reaches them at 10.0.2.2, which qemu maps to that loopback. They
// need root (unshare -n) and the packages of e2e/setup.sh.
//
// Scenarios call t.Parallel: go test runs GOMAXPROCS of them at once (one
// single-vCPU TCG qemu per core); each has its own disk and directory.
package e2e
