#!/usr/bin/env bash
# Installs what `hull image kernel` (make kernel) needs to build the tuned
# guest kernel: Debian's kernel source and the tools to build it. Opt-in:
# scripts/install-deps.sh, make demo and CI do not run this, since the
# default image boots the distribution's kernel and needs none of it.
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

packages=(
	linux-source                   # /usr/src/linux-source-<version>.tar.xz
	build-essential bc bison flex  # the compiler and what kconfig and kbuild run
	libelf-dev                     # objtool (the ORC unwinder)
	libssl-dev                     # host tools that kbuild builds unconditionally
	patch                          # hull's patches to the source (internal/image/kernel/*.patch)
	lz4                            # the bzImage's compressor
	xz-utils
)

apt_install "${packages[@]}"
