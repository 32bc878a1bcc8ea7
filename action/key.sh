#!/usr/bin/env bash
# The key under which the GitHub Action keeps the gobuildcache binary it
# built, with input cache-binary (see action.yml): the Go toolchain and
# target, and the hash of the source the build reads (source-hash.sh), so
# that a change of either builds anew. Writes key=... to GITHUB_OUTPUT.
# Portable to the runners' bash on Linux, macOS and Windows.
set -euo pipefail
cd "${GITHUB_ACTION_PATH:?}"
if ! goenv=$(env -u GOCACHEPROG GOFLAGS= GOWORK=off GOOS= GOARCH= CGO_ENABLED=0 go env GOVERSION GOOS GOARCH GOAMD64 GOARM64 CGO_ENABLED); then
	# A go command that cannot say (a toolchain it cannot fetch): setup.sh
	# then builds nothing and warns, and this step must not fail the job.
	# The key still changes with the source and the machine.
	echo "::warning::gobuildcache: go env failed: the binary's key names no toolchain"
	goenv="unknown $(uname -s) $(uname -m)"
fi
read -r version goos goarch _ <<<"$(echo $goenv)"
sha256=sha256sum
command -v sha256sum >/dev/null || sha256="shasum -a 256" # macOS
sum=$( {
	echo "$goenv"
	bash "$(dirname "${BASH_SOURCE[0]}")/source-hash.sh" .
} | $sha256 | cut -c1-32)
echo "key=gobuildcache-bin-$goos-$goarch-$version-$sum" >>"${GITHUB_OUTPUT:?}"
