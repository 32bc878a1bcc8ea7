#!/usr/bin/env bash
# Release binaries of gobuildcache, which the GitHub Action runs instead of
# compiling the tool in every job (a cold compile of it and the AWS SDK takes
# most of a minute on a 2-core runner).
#
# Usage:
#   scripts/release.sh write TAG [OS/ARCH...]   build the binaries into dist/ and write
#                                               action/release.txt, which names them
#   scripts/release.sh verify TAG               build them again from action/release.txt's
#                                               toolchain and check that every binary is the
#                                               one it names (the release workflow, before
#                                               it publishes dist/)
#
# A release: `scripts/release.sh write vX.Y.Z`, commit action/release.txt,
# tag that commit vX.Y.Z and push the tag; .github/workflows/release.yml
# runs `verify` and publishes dist/*.gz as the release's assets.
#
# The builds are reproducible: one pinned toolchain (GOTOOLCHAIN, from the
# go command that runs `write`, or RELEASE_GO), CGO off, no experiments,
# the architectures' base levels, -trimpath, no VCS stamp, so that a build
# of the same source on any machine is the same bytes. action/release.txt
# holds the source's hash (action/source-hash.sh), the toolchain, the URL
# of the assets and each binary's SHA-256. The Action's setup.sh uses a
# binary only when its own source has that hash and the download has that
# SHA-256, so a release binary is exactly as trusted as the action's source
# the job pinned; otherwise it compiles the source.
#
# RELEASE_URL overrides where the assets are published (default: the GitHub
# releases of the module's repository). Everything is written under the
# repository this script lives in.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
RELEASE_FILE="$REPO_ROOT/action/release.txt"
DIST="$REPO_ROOT/dist"
PLATFORMS=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64)

log() { printf 'release.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

sha256() {
	if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -c1-64
}

# build TAG GO OS/ARCH: dist/gobuildcache-OS-ARCH[.exe] and its .gz.
build() {
	local tag=$1 toolchain=$2 os=${3%/*} arch=${3#*/} exe=
	[ "$os" != windows ] || exe=.exe
	local out="$DIST/gobuildcache-$os-$arch$exe"
	(cd "$REPO_ROOT" && env -u GOCACHEPROG GOTOOLCHAIN="$toolchain" GOFLAGS= GOWORK=off CGO_ENABLED=0 \
		GOOS="$os" GOARCH="$arch" GOAMD64=v1 GOARM64=v8.0 GOEXPERIMENT= GOFIPS140=off \
		go build -trimpath -buildvcs=false -ldflags="-X main.releaseTag=$tag" -o "$out" .)
	gzip -9 -n -c "$out" >"$out.gz"
	echo "binary $os-$arch $(sha256 "$out")"
}

check_tag() {
	[[ $1 =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "tag ${1@Q}: want vMAJOR.MINOR.PATCH"
}

cmd=${1:-}
case $cmd in
write)
	[ $# -ge 2 ] || die "usage: scripts/release.sh write TAG [OS/ARCH...]"
	tag=$2
	shift 2
	check_tag "$tag"
	[ $# -eq 0 ] || PLATFORMS=("$@")
	toolchain=${RELEASE_GO:-$(cd "$REPO_ROOT" && GOFLAGS= GOWORK=off go env GOVERSION)}
	module=$(cd "$REPO_ROOT" && awk '$1 == "module" {print $2; exit}' go.mod)
	url=${RELEASE_URL:-https://$module/releases/download/$tag/}
	rm -rf "$DIST" && mkdir -p "$DIST"
	{
		echo "# Release binaries that the GitHub Action runs instead of compiling"
		echo "# gobuildcache, when its own source is this one (scripts/release.sh)."
		echo "tag $tag"
		echo "go $toolchain"
		echo "source $(bash "$REPO_ROOT/action/source-hash.sh" "$REPO_ROOT")"
		echo "url $url"
		for p in "${PLATFORMS[@]}"; do
			log "building $p with $toolchain"
			build "$tag" "$toolchain" "$p"
		done
	} >"$RELEASE_FILE.new"
	mv -f "$RELEASE_FILE.new" "$RELEASE_FILE"
	log "wrote ${RELEASE_FILE#"$REPO_ROOT"/} and dist/"
	# The source hash covers every Go file here, committed or not: the tag
	# must hold exactly these (the release workflow's verify refuses others).
	if dirty=$(cd "$REPO_ROOT" && git status --porcelain -- '*.go' go.mod go.sum 2>/dev/null) && [ -n "$dirty" ]; then
		log "uncommitted Go files, which the release's source hash includes: commit them with action/release.txt, or remove them and write again:"
		printf '%s\n' "$dirty" >&2
	fi
	;;
verify)
	[ $# -eq 2 ] || die "usage: scripts/release.sh verify TAG"
	tag=$2
	[ -f "$RELEASE_FILE" ] || die "no action/release.txt"
	want_tag=$(awk '$1 == "tag" {print $2}' "$RELEASE_FILE")
	[ "$want_tag" = "$tag" ] || die "action/release.txt is for ${want_tag@Q}, not ${tag@Q}"
	toolchain=$(awk '$1 == "go" {print $2}' "$RELEASE_FILE")
	source=$(bash "$REPO_ROOT/action/source-hash.sh" "$REPO_ROOT")
	[ "$source" = "$(awk '$1 == "source" {print $2}' "$RELEASE_FILE")" ] ||
		die "the source is not the one action/release.txt names: run scripts/release.sh write $tag and commit it"
	rm -rf "$DIST" && mkdir -p "$DIST"
	bad=0
	while read -r word platform want; do
		[ "$word" = binary ] || continue
		log "building $platform with $toolchain"
		got=$(build "$tag" "$toolchain" "${platform%-*}/${platform##*-}")
		if [ "$got" != "binary $platform $want" ]; then
			log "$platform: built ${got##* }, action/release.txt names $want"
			bad=1
		fi
	done <"$RELEASE_FILE"
	[ "$bad" = 0 ] || die "the build is not the one action/release.txt names"
	log "every binary is the one action/release.txt names: dist/*.gz can be published"
	;;
*)
	sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
