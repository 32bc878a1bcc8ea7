#!/usr/bin/env bash
# The key under which the GitHub Action keeps the gobuildcache binary it
# built, with input cache-binary (see action.yml): the Go toolchain and
# target, and a hash of every file the build reads from the action's
# checkout (go.mod, go.sum, the Go files but tests), so that a change of
# either builds anew. Writes key=... to GITHUB_OUTPUT. Portable to the
# runners' bash on Linux, macOS and Windows.
set -euo pipefail
cd "${GITHUB_ACTION_PATH:?}"
goenv=$(env -u GOCACHEPROG GOFLAGS= GOWORK=off go env GOVERSION GOOS GOARCH GOAMD64 GOARM64 CGO_ENABLED)
read -r version goos goarch _ <<<"$(echo $goenv)"
sha256=sha256sum
command -v sha256sum >/dev/null || sha256="shasum -a 256" # macOS
sum=$( {
	echo "$goenv"
	# Each file's hash and name, in a fixed order.
	find . \( -name .git -o -name .tools -o -name builds \) -prune -o \
		-type f \( -name go.mod -o -name go.sum -o \( -name '*.go' ! -name '*_test.go' \) \) -print |
		LC_ALL=C sort | tr '\n' '\0' | xargs -0 $sha256
} | $sha256 | cut -c1-32)
echo "key=gobuildcache-bin-$goos-$goarch-$version-$sum" >>"${GITHUB_OUTPUT:?}"
