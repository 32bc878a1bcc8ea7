#!/usr/bin/env bash
# Local MinIO (S3-compatible) server for tests and manual experiments.
#
# Usage:
#   scripts/minio.sh install               install the pinned MinIO into the tools dir
#   scripts/minio.sh run [--] CMD [ARGS..] start a throwaway MinIO, run CMD against it,
#                                          then stop it and delete its data; exits with CMD's status
#   eval "$(scripts/minio.sh start)"       start a MinIO in the background, print `export VAR=value` lines
#   scripts/minio.sh stop                  stop the server started by `start` and delete its data
#   scripts/minio.sh help
#
# Exported to CMD (run) / printed (start):
#   S3_ENDPOINT, MINIO_ENDPOINT   http://127.0.0.1:PORT
#   MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#   AWS_REGION=us-east-1, S3_PATH_STYLE=true
#   S3_BUCKET                     a bucket created at start: $MINIO_BUCKET, default gobuildcache
#   MINIO_KMS_KEY_ID              the server's one KMS key (a throwaway static key), for
#                                 SSE-S3 (AES256) and SSE-KMS requests
#   MINIO_DATA_DIR, MINIO_PID, MINIO_BIN
#
# MINIO_DATA_PARENT (default ${TMPDIR:-/tmp}) is where the server's throwaway data directory is
# made. The benchmarks put it on tmpfs (/dev/shm): MinIO writes every object's metadata with
# O_DSYNC, and on the disk the jobs build on, those synchronous writes stall the jobs' own,
# which a CI VM's remote bucket never does.
#
# Tools dir: ${GOBUILDCACHE_TOOLS:-<repo root>/.tools}; the binary lives in <tools>/bin/minio and
# <tools>/bin/minio.version records the pinned version (a changed pin triggers a reinstall).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

MINIO_MODULE="github.com/minio/minio"
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
TOOLS_DIR="${GOBUILDCACHE_TOOLS:-$REPO_ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
MINIO_BINARY="$BIN_DIR/minio"
STAMP_FILE="$BIN_DIR/minio.version"
STATE_FILE="$TOOLS_DIR/minio-server.state"

START_TIMEOUT=60 # seconds to wait for /minio/health/live
STOP_TIMEOUT=5   # seconds between TERM and KILL

log() { printf 'minio.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage: scripts/minio.sh install
       scripts/minio.sh run [--] CMD [ARGS...]
       eval "\$(scripts/minio.sh start)"
       scripts/minio.sh stop
EOF
}

# ---------------------------------------------------------------- install

install_minio() {
	mkdir -p "$BIN_DIR"
	# Absolute path even if GOBUILDCACHE_TOOLS is relative.
	BIN_DIR="$(cd "$BIN_DIR" && pwd)"
	MINIO_BINARY="$BIN_DIR/minio"
	STAMP_FILE="$BIN_DIR/minio.version"

	local stamp=""
	if [[ -x "$MINIO_BINARY" ]]; then
		if [[ ! -f "$STAMP_FILE" ]]; then
			# Binary without a stamp: assume it is the pinned version.
			printf '%s\n' "$MINIO_VERSION" >"$STAMP_FILE"
			return 0
		fi
		stamp="$(cat "$STAMP_FILE")"
		[[ "$stamp" == "$MINIO_VERSION" ]] && return 0
	fi

	# Serialise concurrent installs (e.g. parallel test runs).
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$BIN_DIR/.minio-install.lock"
		flock 9
		if [[ -x "$MINIO_BINARY" && -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$MINIO_VERSION" ]]; then
			exec 9>&-
			return 0
		fi
	fi

	command -v go >/dev/null 2>&1 || die "go not found in PATH; cannot install MinIO"
	if [[ -n "$stamp" ]]; then
		log "MinIO pin changed ($stamp -> $MINIO_VERSION); reinstalling into $BIN_DIR (~10 min on 2 cores)..."
	else
		log "installing MinIO $MINIO_VERSION into $BIN_DIR (one-time, ~10 min on 2 cores)..."
	fi
	# Run from the bin dir so the repo's go.mod plays no part in the build.
	(cd "$BIN_DIR" && GOBIN="$BIN_DIR" go install "$MINIO_MODULE@$MINIO_VERSION") ||
		die "go install $MINIO_MODULE@$MINIO_VERSION failed"
	[[ -x "$MINIO_BINARY" ]] || die "go install succeeded but $MINIO_BINARY is missing"
	printf '%s\n' "$MINIO_VERSION" >"$STAMP_FILE"
	if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
	log "installed $MINIO_BINARY"
}

# ---------------------------------------------------------------- helpers

# Prints two free TCP ports on 127.0.0.1 (API, console).
free_ports() {
	if command -v python3 >/dev/null 2>&1; then
		python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
		return
	fi
	# Fallback: random ports nobody answers on.
	local ports=() p
	while ((${#ports[@]} < 2)); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		[[ " ${ports[*]:-} " == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			ports+=("$p")
		fi
	done
	echo "${ports[*]}"
}

# Returns 0 if http://127.0.0.1:$1/minio/health/live answers 200.
health_ok() {
	local port="$1" url="http://127.0.0.1:$1/minio/health/live"
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null
	elif command -v python3 >/dev/null 2>&1; then
		python3 -c 'import sys,urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' "$url" 2>/dev/null
	else
		(
			exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
			printf 'GET /minio/health/live HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$port" >&3
			IFS= read -r -t 2 line <&3 || exit 1
			[[ "$line" =~ ^HTTP/1\.[01]\ 200 ]]
		) 2>/dev/null
	fi
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

pid_is_minio() {
	local pid="$1"
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
	if [[ -r "/proc/$pid/cmdline" ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'minio' || return 1
	fi
	return 0
}

# kill_minio PID OWN_CHILD: TERM, wait up to STOP_TIMEOUT s, then KILL.
# A pid that is not our child (from the state file) is only signalled if it
# still looks like MinIO, in case the pid was reused.
kill_minio() {
	local pid="$1" own="$2" i
	if [[ "$own" == 1 ]]; then
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	else
		pid_is_minio "$pid" || return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "MinIO (pid $pid) did not exit after ${STOP_TIMEOUT}s; sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true # reaps it if it is our child
}

# ---------------------------------------------------------------- server

# The name of the server's one KMS key.
KMS_KEY_ID=gobuildcache-test-key

# Globals set by start_server.
WORK_DIR=""
MINIO_PID_VAL=""
PORT=""
ROOT_USER=""
ROOT_PASSWORD=""

cleanup_server() {
	if [[ -n "$MINIO_PID_VAL" ]]; then
		kill_minio "$MINIO_PID_VAL" 1
		MINIO_PID_VAL=""
	fi
	if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
		rm -rf "$WORK_DIR"
	fi
	WORK_DIR=""
}

# start_server DETACH: starts MinIO and waits until it is healthy.
start_server() {
	local detach="$1" attempt ports console_port deadline status
	WORK_DIR="$(mktemp -d "${MINIO_DATA_PARENT:-${TMPDIR:-/tmp}}/gobuildcache-minio.XXXXXX")"
	mkdir -p "$WORK_DIR/data"
	ROOT_USER="minioadmin-$(random_hex 4)"
	ROOT_PASSWORD="minio-$(random_hex 12)"

	for attempt in 1 2 3; do
		read -r PORT console_port < <(free_ports) || true
		[[ -n "$PORT" && -n "$console_port" ]] || die "could not find free ports"
		local -a cmd=("$MINIO_BINARY" server
			--address "127.0.0.1:$PORT"
			--console-address "127.0.0.1:$console_port"
			--quiet "$WORK_DIR/data")
		if [[ "$detach" == 1 ]] && command -v setsid >/dev/null 2>&1; then
			# New session so it survives the terminal; a non-interactive shell's
			# background child is not a group leader, so setsid execs in place
			# and $! stays MinIO's pid.
			cmd=(setsid "${cmd[@]}")
		fi
		MINIO_ROOT_USER="$ROOT_USER" MINIO_ROOT_PASSWORD="$ROOT_PASSWORD" \
			MINIO_KMS_SECRET_KEY="$KMS_KEY_ID:$(head -c 32 /dev/urandom | base64)" \
			MINIO_BROWSER=off MINIO_UPDATE=off \
			"${cmd[@]}" </dev/null >"$WORK_DIR/minio.log" 2>&1 &
		MINIO_PID_VAL=$!

		status=timeout
		deadline=$((SECONDS + START_TIMEOUT))
		while ((SECONDS < deadline)); do
			if health_ok "$PORT"; then
				status=ok
				break
			fi
			if ! kill -0 "$MINIO_PID_VAL" 2>/dev/null; then
				status=died
				break
			fi
			sleep 0.2
		done

		case "$status" in
		ok) return 0 ;;
		died)
			wait "$MINIO_PID_VAL" 2>/dev/null || true
			MINIO_PID_VAL=""
			if ((attempt < 3)) && grep -qiE 'address already in use|bind' "$WORK_DIR/minio.log"; then
				log "port clash on $PORT/$console_port; retrying"
				continue
			fi
			log "MinIO exited during startup; last log lines:"
			tail -n 30 "$WORK_DIR/minio.log" >&2 || true
			return 1
			;;
		timeout)
			log "MinIO not healthy after ${START_TIMEOUT}s; last log lines:"
			tail -n 30 "$WORK_DIR/minio.log" >&2 || true
			return 1
			;;
		esac
	done
	return 1
}

# Prints NAME=VALUE pairs (one per line) describing the running server.
server_env() {
	local endpoint="http://127.0.0.1:$PORT"
	printf '%s\n' \
		"S3_ENDPOINT=$endpoint" \
		"MINIO_ENDPOINT=$endpoint" \
		"MINIO_ROOT_USER=$ROOT_USER" \
		"MINIO_ROOT_PASSWORD=$ROOT_PASSWORD" \
		"MINIO_DATA_DIR=$WORK_DIR/data" \
		"MINIO_PID=$MINIO_PID_VAL" \
		"MINIO_BIN=$MINIO_BINARY" \
		"AWS_ACCESS_KEY_ID=$ROOT_USER" \
		"AWS_SECRET_ACCESS_KEY=$ROOT_PASSWORD" \
		"AWS_REGION=us-east-1" \
		"S3_PATH_STYLE=true" \
		"S3_BUCKET=${MINIO_BUCKET:-gobuildcache}" \
		"MINIO_KMS_KEY_ID=$KMS_KEY_ID"
}

# create_bucket makes the bucket named by MINIO_BUCKET (default gobuildcache)
# so that the server is ready for `gobuildcache -backend=s3` at once.
create_bucket() {
	local bucket="${MINIO_BUCKET:-gobuildcache}"
	if ! command -v curl >/dev/null 2>&1; then
		log "curl not found: bucket $bucket not created"
		return 0
	fi
	curl -fsS -o /dev/null -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$ROOT_USER:$ROOT_PASSWORD" "http://127.0.0.1:$PORT/$bucket" ||
		log "could not create bucket $bucket"
}

announce() {
	printf 'minio: http://127.0.0.1:%s (user %s, data %s)\n' "$PORT" "$ROOT_USER" "$WORK_DIR/data" >&2
}

# ---------------------------------------------------------------- commands

cmd_run() {
	[[ "${1:-}" == "--" ]] && shift
	(($# > 0)) || { usage; die "run: missing command"; }
	install_minio

	trap cleanup_server EXIT
	trap 'on_signal INT 130' INT
	trap 'on_signal TERM 143' TERM
	trap 'on_signal HUP 129' HUP
	start_server 0 || exit 1
	create_bucket

	local kv
	while IFS= read -r kv; do export "${kv?}"; done < <(server_env)
	announce

	local rc=0
	if env --default-signal=INT true 2>/dev/null; then
		# Run CMD in the background (keeping our stdin, and with SIGINT/SIGQUIT
		# restored, which bash ignores for background commands) and wait for
		# it, so that a signal sent to this script alone is handled at once.
		env --default-signal=INT,QUIT -- "$@" <&0 &
		CHILD_PID=$!
		wait "$CHILD_PID" || rc=$?
		CHILD_PID=""
	else
		# Foreground: a signal to this script is handled once CMD exits.
		"$@" || rc=$?
	fi
	exit "$rc"
}

CHILD_PID=""

# Forwards a signal to CMD, waits for it, then exits (the EXIT trap stops MinIO).
on_signal() {
	local sig="$1" code="$2"
	if [[ -n "$CHILD_PID" ]]; then
		kill -"$sig" "$CHILD_PID" 2>/dev/null || true
		wait "$CHILD_PID" 2>/dev/null || true
		CHILD_PID=""
	fi
	exit "$code"
}

# Prints `export NAME=VALUE` lines for the server in the state file; fails if it is not running.
print_state_exports() {
	[[ -f "$STATE_FILE" ]] || return 1
	local kv name value pid=""
	pid="$(sed -n 's/^MINIO_PID=//p' "$STATE_FILE")"
	pid_is_minio "$pid" || return 1
	while IFS= read -r kv; do
		name="${kv%%=*}"
		value="${kv#*=}"
		case "$name" in
		WORK_DIR) continue ;;
		esac
		printf 'export %s=%q\n' "$name" "$value"
	done <"$STATE_FILE"
}

cmd_start() {
	install_minio
	if print_state_exports; then
		log "MinIO already running ($(sed -n 's/^S3_ENDPOINT=//p' "$STATE_FILE")); use 'scripts/minio.sh stop' first to restart"
		return 0
	fi
	[[ -f "$STATE_FILE" ]] && cmd_stop_quiet

	trap cleanup_server EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start_server 1 || exit 1
	create_bucket

	mkdir -p "$TOOLS_DIR"
	{
		server_env
		printf 'WORK_DIR=%s\n' "$WORK_DIR"
	} >"$STATE_FILE.tmp"
	mv "$STATE_FILE.tmp" "$STATE_FILE"

	# Hand the server over to the state file; do not clean it up on exit.
	trap - EXIT INT TERM
	announce
	log "stop it with: scripts/minio.sh stop"
	print_state_exports
}

cmd_stop_quiet() {
	local pid work
	pid="$(sed -n 's/^MINIO_PID=//p' "$STATE_FILE")"
	work="$(sed -n 's/^WORK_DIR=//p' "$STATE_FILE")"
	if [[ -n "$pid" ]]; then kill_minio "$pid" 0; fi
	if [[ -n "$work" && -d "$work" && "$work" == */gobuildcache-minio.* ]]; then
		rm -rf "$work"
	fi
	rm -f "$STATE_FILE"
}

cmd_stop() {
	if [[ ! -f "$STATE_FILE" ]]; then
		log "no MinIO started by 'scripts/minio.sh start' (no $STATE_FILE)"
		return 0
	fi
	local pid
	pid="$(sed -n 's/^MINIO_PID=//p' "$STATE_FILE")"
	cmd_stop_quiet
	log "stopped MinIO (pid $pid)"
}

main() {
	local sub="${1:-}"
	(($# > 0)) && shift
	case "$sub" in
	install) install_minio ;;
	run) cmd_run "$@" ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	help | -h | --help) usage ;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
