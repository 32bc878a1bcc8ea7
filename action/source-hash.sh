#!/usr/bin/env bash
# Prints a hash (32 hex digits) of every file a build of gobuildcache reads
# from the checkout in DIR (default: the current directory): go.mod, go.sum
# and the Go files but tests, each file's hash and name in a fixed order. It
# says whether two checkouts build the same binary with the same toolchain:
# key.sh keys the cached binary by it, and release.txt names the source of
# its release binaries by it. Portable to the runners' bash on Linux, macOS
# and Windows, and the same on each: Git Bash's sha256sum marks its lines
# "HASH *NAME" (binary mode) where Linux's and macOS's write "HASH  NAME", so
# the mark is taken out (else a Windows runner never ran a release binary).
set -euo pipefail
cd "${1:-.}"
sha256=sha256sum
command -v sha256sum >/dev/null || sha256="shasum -a 256" # macOS
find . \( -name .git -o -name .tools -o -name builds -o -name dist \) -prune -o \
	-type f \( -name go.mod -o -name go.sum -o \( -name '*.go' ! -name '*_test.go' \) \) -print |
	LC_ALL=C sort | tr '\n' '\0' | xargs -0 $sha256 | sed 's/^\([0-9a-f]*\) \*/\1  /' | $sha256 | cut -c1-32
