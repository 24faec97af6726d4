#!/usr/bin/env bash
# Builds crictl (the CRI client that test/cri_test.go drives) from source
# through the Go module proxy, into $BIN (default: the repo's bin/).
# Debian packages no crictl and no prebuilt binary can be fetched here.
#
# cri-tools' go.mod replaces the k8s.io/* staging modules with
# k8s.io/kubernetes/staging/src/... pseudo-versions, which the proxy does
# not serve; they are rewritten to the published k8s.io/*@v0.26.0 modules
# (the same Kubernetes release) in a writable copy of the module source.
#
# Idempotent: does nothing when $BIN/crictl is already this version.
set -euo pipefail

version=v1.26.1
staging=v0.26.0
module=github.com/kubernetes-sigs/cri-tools
bin=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
bin=$(mkdir -p "$bin" && cd "$bin" && pwd)
out=$bin/crictl
export PATH="$PATH:/usr/local/go/bin"

if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -qx "crictl version ${version#v}"; then
	exit 0
fi

start=$(date +%s)
src=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "downloading $module@$version failed" >&2; exit 1; }

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work"
chmod -R u+w "$work"
cd "$work"
# The module zip keeps vendor/modules.txt without the vendored code.
rm -rf vendor
sed -i -E "s#^(\s*k8s\.io/[^ ]+) => k8s\.io/kubernetes/staging/src/(k8s\.io/[^ ]+) v[^ ]+\$#\1 => \2 $staging#" go.mod
if grep -q 'kubernetes/staging' go.mod; then
	echo "go.mod still names staging modules:" >&2
	grep 'kubernetes/staging' go.mod >&2
	exit 1
fi
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X $module/pkg/version.Version=${version#v}" \
	-o "$out.tmp" ./cmd/crictl
mv "$out.tmp" "$out"
echo "built $("$out" --version) into $out in $(($(date +%s) - start)) s"
