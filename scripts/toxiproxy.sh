#!/usr/bin/env bash
# Toxiproxy (a TCP proxy that adds latency and faults), for the benchmark.
#
# Usage:
#   scripts/toxiproxy.sh install    install the pinned toxiproxy server and CLI into the tools dir,
#                                   once, and print the server's path
#   scripts/toxiproxy.sh path       print the server's path (fails if not installed)
#   scripts/toxiproxy.sh help
#
# Tools dir: ${GOBUILDCACHE_TOOLS:-<repo root>/.tools}; the binaries live in <tools>/bin/toxiproxy-server
# and <tools>/bin/toxiproxy-cli, and <tools>/bin/toxiproxy.version records the pinned version (a changed
# pin triggers a reinstall). They come from the Go module proxy; nothing else is downloaded.
# The benchmark (go run ./bench -s3) starts and stops the server itself, on 127.0.0.1 only.
set -euo pipefail

TOXIPROXY_MODULE="github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION="v2.12.0"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
TOOLS_DIR="${GOBUILDCACHE_TOOLS:-$REPO_ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"

log() { printf 'toxiproxy.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage: scripts/toxiproxy.sh install   install toxiproxy $TOXIPROXY_VERSION (once) and print the server's path
       scripts/toxiproxy.sh path      print the server's path
EOF
}

set_paths() {
	mkdir -p "$BIN_DIR"
	# Absolute path even if GOBUILDCACHE_TOOLS is relative.
	BIN_DIR="$(cd "$BIN_DIR" && pwd)"
	SERVER_BINARY="$BIN_DIR/toxiproxy-server"
	CLI_BINARY="$BIN_DIR/toxiproxy-cli"
	STAMP_FILE="$BIN_DIR/toxiproxy.version"
}

installed() {
	[[ -x "$SERVER_BINARY" && -x "$CLI_BINARY" && -f "$STAMP_FILE" &&
		"$(cat "$STAMP_FILE")" == "$TOXIPROXY_VERSION" ]]
}

install_toxiproxy() {
	set_paths
	installed && return 0

	# Serialise concurrent installs.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$BIN_DIR/.toxiproxy-install.lock"
		flock 9
		if installed; then
			exec 9>&-
			return 0
		fi
	fi

	command -v go >/dev/null 2>&1 || die "go not found in PATH; cannot install toxiproxy"
	if [[ -f "$STAMP_FILE" ]]; then
		log "toxiproxy pin changed ($(cat "$STAMP_FILE") -> $TOXIPROXY_VERSION); reinstalling into $BIN_DIR..."
	else
		log "installing toxiproxy $TOXIPROXY_VERSION into $BIN_DIR (one-time, about a minute)..."
	fi
	# go install names the binaries after their directories (server, cli):
	# install into a temp GOBIN, then move them into place under our names.
	local tmp
	tmp="$(mktemp -d "$BIN_DIR/.toxiproxy-install.XXXXXX")"
	# Run from the temp dir so the repo's go.mod plays no part in the build.
	if ! (cd "$tmp" && GOBIN="$tmp" go install \
		"$TOXIPROXY_MODULE/cmd/server@$TOXIPROXY_VERSION" \
		"$TOXIPROXY_MODULE/cmd/cli@$TOXIPROXY_VERSION"); then
		rm -rf "$tmp"
		die "go install $TOXIPROXY_MODULE/cmd/{server,cli}@$TOXIPROXY_VERSION failed"
	fi
	if [[ ! -x "$tmp/server" || ! -x "$tmp/cli" ]]; then
		rm -rf "$tmp"
		die "go install succeeded but $tmp/server or $tmp/cli is missing"
	fi
	mv -f "$tmp/server" "$SERVER_BINARY"
	mv -f "$tmp/cli" "$CLI_BINARY"
	rm -rf "$tmp"
	printf '%s\n' "$TOXIPROXY_VERSION" >"$STAMP_FILE"
	if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
	log "installed $SERVER_BINARY and $CLI_BINARY"
}

main() {
	local sub="${1:-}"
	(($# > 0)) && shift
	case "$sub" in
	install)
		install_toxiproxy
		printf '%s\n' "$SERVER_BINARY"
		;;
	path)
		set_paths
		installed || die "toxiproxy $TOXIPROXY_VERSION is not installed; run scripts/toxiproxy.sh install"
		printf '%s\n' "$SERVER_BINARY"
		;;
	help | -h | --help) usage ;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
