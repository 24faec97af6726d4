#!/usr/bin/env bash
# The demo: run a busybox container with hull and show that it ran in a VM.
# Usage: test/demo.sh BIN_DIR   (make demo passes bin/)
set -euo pipefail
bin=${1:-bin}
hull="$bin/hull"

work=$(mktemp -d /tmp/hull-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/rootfs/"{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
cat > "$work/rootfs/demo.sh" <<'SCRIPT'
echo "container kernel: $(uname -r)"
echo "container cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "container boot:   $(cat /proc/sys/kernel/random/boot_id)"
echo "guest memory:     $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-3)"
echo "guest dmesg:      $(dmesg 2>&1 | head -1)"
SCRIPT
"$hull" spec --bundle "$work"
# Non-interactive, running the script above.
sed -i -e 's/"terminal": true/"terminal": false/' -e 's|^\(\s*\)"sh"$|\1"sh", "/demo.sh"|' "$work/config.json"

echo "host kernel:      $(uname -r)"
echo "host cpu:         $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "host boot:        $(cat /proc/sys/kernel/random/boot_id)"
echo "--- hull run: boots a VM, runs the container, tears it down ---"
start=$(date +%s%N)
"$hull" run --bundle "$work" "hull-demo-$$" | tee "$work/out"
end=$(date +%s%N)
echo "--- done in $(( (end - start) / 1000000 )) ms ---"
host=$(uname -r)
guest=$(sed -n 's/^container kernel: //p' "$work/out")
if [ -n "$guest" ] && [ "$guest" != "$host" ]; then
	echo "OK: the container ran in a VM (guest kernel $guest, host kernel $host)"
else
	echo "FAIL: container kernel '$guest', host kernel '$host'" >&2
	exit 1
fi
