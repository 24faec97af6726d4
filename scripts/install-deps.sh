#!/usr/bin/env bash
# Installs the Debian packages hull needs to build, run and test on this
# host. Idempotent, and quick when everything is already there.
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

packages=(
	qemu-system-x86 qemu-utils     # the VMM, with /usr/lib/qemu/virtiofsd
	linux-image-cloud-amd64        # the default guest kernel
	linux-image-amd64              # the generic kernel: has 9p, for images with storage.shared_fs = "virtio-9p"
	busybox-static                 # test and demo root filesystems
	runc                           # the peer that `hull bench` compares with
	podman conmon containernetworking-plugins  # test/podman_test.go: podman with hull as its runtime
	containerd                     # test/containerd_test.go: ctr and the hull shim
	docker.io                      # test/docker_test.go: dockerd with hull as a runtime
	iperf3                         # hull bench net
	fio                            # hull bench io
	protobuf-compiler libprotobuf-dev  # `make proto`
	cpio kmod gcc libc6-dev make git ca-certificates
)

apt_install "${packages[@]}"
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || { echo "Go not found (expected at /usr/local/go)" >&2; exit 1; }
