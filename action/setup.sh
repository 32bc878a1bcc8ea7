#!/usr/bin/env bash
# The GitHub Action's one step (see action.yml): build gobuildcache from the
# action's own checkout, give the work tree content mtimes, and export
# GOCACHEPROG (with the inputs as flags) and PATH to the job's later steps.
#
# Reads INPUT_* (action.yml), GITHUB_ACTION_PATH, GITHUB_WORKSPACE,
# RUNNER_TEMP, GITHUB_ENV, GITHUB_PATH and GITHUB_STEP_SUMMARY. The settings
# travel as flags inside GOCACHEPROG, not as variables: the job's own steps
# then see no generic names such as DEBUG or BACKEND_TYPE, and
# `go env GOCACHEPROG` shows exactly what runs.
set -euo pipefail

# The boolean inputs, read as @actions/core's getBooleanInput reads them
# (YAML 1.2's true, True, TRUE, false, False, FALSE; empty is the default):
# any other value stops the step with one line naming the input, where it
# was taken as false (read-only: yes wrote the cache, check: True checked
# nothing).
for input in s3-path-style:false read-only:false check:false stats:true mtimes:true prefetch-early:false cache-binary:false; do
	name=${input%:*}
	var=INPUT_$(echo "$name" | tr a-z- A-Z_)
	case ${!var:-${input#*:}} in
	true | True | TRUE) printf -v "$var" true ;;
	false | False | FALSE) printf -v "$var" false ;;
	*) echo "::error::gobuildcache: input $name is \"${!var}\": want true or false" >&2; exit 1 ;;
	esac
done

bin_dir="${RUNNER_TEMP:?}/gobuildcache"
# This machine's GOOS and GOARCH, from uname: the go command is not needed
# for them, and asked in the action's checkout, an older one would fetch a
# newer toolchain first. host is empty if no release has a binary for it.
os= arch= host=
case "$(uname -s)" in
Linux) os=linux ;;
Darwin) os=darwin ;;
MINGW* | MSYS* | CYGWIN*) os=windows ;;
esac
case "$(uname -m)" in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
esac
[ -z "$os" ] || [ -z "$arch" ] || host=$os-$arch
# On Windows the go command runs GOCACHEPROG only by a name that ends in
# .exe (or another of PATHEXT's), and go build -o adds none.
exe=
[ "$os" != windows ] || exe=.exe
bin="$bin_dir/gobuildcache$exe"
new="$bin_dir/gobuildcache.new$exe"

sha256() {
	if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -c1-64
}

# release_binary installs the release binary that action/release.txt
# (scripts/release.sh) names for this machine, when the action's source is
# that release's (source-hash.sh) and the download has the SHA-256 the file
# names: a binary exactly as trusted as the source the job pinned, with no
# compile. Otherwise it says why in one line and returns 1, and the source
# is compiled; a download that is not the binary named is a warning.
release_binary() {
	local file="${GITHUB_ACTION_PATH:?}/action/release.txt" tag url source want= got
	[ -f "$file" ] || return 1
	tag=$(awk '$1 == "tag" {print $2}' "$file")
	url=$(awk '$1 == "url" {print $2}' "$file")
	source=$(awk '$1 == "source" {print $2}' "$file")
	[ -z "$host" ] || want=$(awk -v p="$host" '$1 == "binary" && $2 == p {print $3}' "$file")
	if [ -z "$want" ]; then
		echo "gobuildcache: release $tag has no binary for ${host:-$(uname -sm)}: compiling the action's source"
		return 1
	fi
	if [ "$(bash "$(dirname "${BASH_SOURCE[0]}")/source-hash.sh" "$GITHUB_ACTION_PATH")" != "$source" ]; then
		echo "gobuildcache: the action's source is not release $tag's (action/release.txt): compiling it"
		return 1
	fi
	rm -f "$bin.gz" "$new"
	# A runner that cannot reach the release (GitHub Enterprise Server with no
	# way out, say) loses at most a few seconds to it before compiling.
	if ! curl -fsSL --retry 1 --connect-timeout 5 --max-time 120 --max-filesize 200000000 -o "$bin.gz" "${url}gobuildcache-$host$exe.gz" 2>"$bin_dir/download.err"; then
		echo "gobuildcache: release $tag's binary did not download ($(tail -n1 "$bin_dir/download.err")): compiling the action's source"
		return 1
	fi
	# At most 200 MB (the binaries are under 20): not the binary named, whatever it is.
	gzip -dc "$bin.gz" 2>/dev/null | head -c 200000000 >"$new" || true
	got=$(sha256 "$new")
	rm -f "$bin.gz"
	if [ "$got" != "$want" ]; then
		rm -f "$new"
		echo "::warning::gobuildcache: the download of release $tag's binary for $host has SHA-256 $got, not the $want that action/release.txt names: it does not run; compiling the action's source"
		return 1
	fi
	if ! { chmod +x "$new" && "$new" version >/dev/null 2>&1; }; then
		rm -f "$new"
		echo "gobuildcache: release $tag's binary does not run here: compiling the action's source"
		return 1
	fi
	# A rename: a binary already at $bin (the action used twice) may be running.
	mv -f "$new" "$bin"
	echo "gobuildcache: release $tag's binary, SHA-256 verified against action/release.txt"
}

# Install: the release binary of the action's source if there is one (see
# release_binary), else build the module at the action's ref. GOCACHEPROG
# may already be set (the action used twice in a job); the build does not
# need it. With input cache-binary, action.yml restored $cache_dir from the
# Actions cache under key.sh's key if it could, and saves it at the job's
# end if not: a binary there that runs is used as it is, and a new build is
# put there.
mkdir -p "$bin_dir"
cache_dir="${RUNNER_TEMP:?}/gobuildcache-bin"
if release_binary; then
	if [ "${INPUT_CACHE_BINARY:-false}" = true ]; then
		mkdir -p "$cache_dir" && cp "$bin" "$cache_dir/gobuildcache$exe"
	fi
elif [ "${INPUT_CACHE_BINARY:-false}" = true ] && "$cache_dir/gobuildcache$exe" version >/dev/null 2>&1; then
	cp "$cache_dir/gobuildcache$exe" "$new" && mv -f "$new" "$bin" # a rename, as above
	echo "gobuildcache: the binary from the Actions cache (input cache-binary)"
else
	# key.sh reads the toolchain with this environment: change both together.
	# GOOS and GOARCH are the job's targets, not this machine's; the binary is
	# static (CGO_ENABLED=0), as a release's and make build's. A build that
	# fails (the job's module proxy down or off, a Go too old for the tool)
	# leaves the job without the cache, never failed.
	if ! (cd "${GITHUB_ACTION_PATH:?}" && env -u GOCACHEPROG GOFLAGS= GOWORK=off GOOS= GOARCH= CGO_ENABLED=0 go build -o "$bin" .) 2>"$bin_dir/build.err"; then
		cat "$bin_dir/build.err" >&2
		echo "::warning::gobuildcache did not build ($(tail -n1 "$bin_dir/build.err")): this job runs without the cache"
		exit 0
	fi
	if [ "${INPUT_CACHE_BINARY:-false}" = true ]; then
		mkdir -p "$cache_dir" && cp "$bin" "$cache_dir/gobuildcache$exe"
	fi
fi
# Which build this job runs, for its log (an action's checkout has no VCS
# data: the action's ref says the rest).
echo "$("$bin" version)${GITHUB_ACTION_REF:+ (action ref $GITHUB_ACTION_REF)}"

# quote WHAT WORD prints WORD as one word of GOCACHEPROG, which the go
# command splits at spaces, a quote counting only around a whole word
# (single or double quotes, no escapes: cmd/internal/quoted); WHAT names it
# in the error for a word that cannot be written so.
quote() {
	local what=$1 word=$2
	case $word in
	*$'\n'*) echo "::error::gobuildcache: $what has a newline" >&2; exit 1 ;;
	*" "* | *$'\t'* | *'"'* | *"'"*)
		case $word in
		*"'"*)
			case $word in *'"'*) echo "::error::gobuildcache: $what has both kinds of quotes" >&2; exit 1 ;; esac
			printf '"%s"' "$word" ;;
		*) printf "'%s'" "$word" ;;
		esac ;;
	*) printf '%s' "$word" ;;
	esac
}

# flag NAME VALUE adds -NAME=VALUE to the command line, quoted as one word
# (quote); args keeps the same flags unquoted.
prog=$(quote "the binary's path ($bin)" "$bin")
args=()
flag() {
	local name=$1 value=$2
	args+=("-$name=$value")
	prog="$prog $(quote "input $name" "-$name=$value")"
}

if [ -n "${INPUT_S3_BUCKET:-}" ]; then
	flag backend s3
	flag s3-bucket "$INPUT_S3_BUCKET"
	[ -z "${INPUT_S3_PREFIX:-}" ] || flag s3-prefix "$INPUT_S3_PREFIX"
	[ -z "${INPUT_AWS_REGION:-}" ] || flag s3-region "$INPUT_AWS_REGION"
	[ -z "${INPUT_S3_ENDPOINT:-}" ] || flag s3-endpoint "$INPUT_S3_ENDPOINT"
	[ "${INPUT_S3_PATH_STYLE:-false}" != true ] || flag s3-path-style true
	[ -z "${INPUT_S3_READ_FROM:-}" ] || flag s3-read-from "$INPUT_S3_READ_FROM"
	[ "${INPUT_READ_ONLY:-false}" != true ] || flag read-only true
	scope="${INPUT_PREFETCH_SCOPE:-}"
	if [ -z "$scope" ] && [ -n "${GITHUB_WORKFLOW:-}" ]; then
		# The default names one scope: a comma in the workflow's name
		# would make it a list (-prefetch-scope's further scopes). Quotes
		# and line breaks become spaces, so that it is one word of
		# GOCACHEPROG whatever the name holds (quote takes no line break,
		# nor both kinds of quotes): the scope is the same, since its name
		# keeps none of them (scopeName makes a run of them one "_").
		scope="$GITHUB_WORKFLOW-${GITHUB_JOB:-}-${RUNNER_OS:-}-${RUNNER_ARCH:-}"
		scope="${scope//,/_}"
		scope="${scope//[\"\'$'\t\r\n']/ }"
	fi
	[ -z "$scope" ] || flag prefetch-scope "$scope"
else
	flag backend disk
fi
# cache-dir as actions/cache reads a path: ~ is the home directory and a
# relative path is in the workspace, not in the working directory of each
# go command (one cache per step's directory, inside the checkout).
case ${INPUT_CACHE_DIR:-} in
"" | /* | [A-Za-z]:[/\\]* | [/\\][/\\]*) ;;
"~" | "~/"*)
	home=$HOME
	[ "$os" != windows ] || home=${USERPROFILE:-$HOME} # $HOME is Git Bash's /c/Users/...
	INPUT_CACHE_DIR=$home${INPUT_CACHE_DIR#"~"} ;;
*) INPUT_CACHE_DIR=$GITHUB_WORKSPACE/$INPUT_CACHE_DIR ;;
esac
[ -z "${INPUT_CACHE_DIR:-}" ] || flag cache-dir "$INPUT_CACHE_DIR"
[ "${INPUT_STATS:-true}" != true ] || flag stats true
# Every line of the input (a YAML block holds one flag a line), split at
# spaces; a flag's value cannot hold one.
read -r -d '' -a extra <<<"${INPUT_FLAGS:-}" || true
for f in ${extra[@]+"${extra[@]}"}; do
	prog="$prog $f"
	args+=("$f")
done

# Check the flags now, with one clear line, rather than in every go command:
# prefetch takes the server's flags and checks them as the server does,
# each alone and together, then (with -prefetch=false) does nothing. The
# error is its last line, after any warning.
if ! "$bin" prefetch "${args[@]}" -prefetch=false >/dev/null 2>"$bin_dir/flags.err"; then
	echo "::error::$(tail -n1 "$bin_dir/flags.err")" >&2
	exit 1
fi

# check: credentials that can write a read location fail the job (a pull
# request could plant entries that trusted builds use); any other failure of
# the remote is a warning, as it never fails a build.
if [ "${INPUT_CHECK:-false}" = true ] && [ -n "${INPUT_S3_BUCKET:-}" ]; then
	if "$bin" check "${args[@]}" >"$bin_dir/check.out" 2>&1; then
		cat "$bin_dir/check.out"
	else
		cat "$bin_dir/check.out"
		if grep -q '^DANGER: ' "$bin_dir/check.out"; then
			echo "::error::$(grep -m1 '^DANGER: ' "$bin_dir/check.out")" >&2
			exit 1
		fi
		echo "::warning::$(tail -n1 "$bin_dir/check.out")" >&2
	fi
fi

# The work tree: mtimes stamps it, and its go.mod may switch the toolchain.
tree="${GITHUB_WORKSPACE:?}/${INPUT_WORKING_DIRECTORY:-.}"

# The early prefetch, in the background: its output goes to a file, so
# that this step does not wait for it (a step ends when nothing holds its
# output open). The job's end stops it, if it has not ended by then.
if [ "${INPUT_PREFETCH_EARLY:-false}" = true ] && [ -n "${INPUT_S3_BUCKET:-}" ]; then
	(cd "$tree" && exec nohup "$bin" prefetch "${args[@]}") </dev/null >"$bin_dir/prefetch.log" 2>&1 &
	echo "gobuildcache: prefetch started in the background (its output: $bin_dir/prefetch.log)"
fi

# Content mtimes: a failure costs test cache hits, never the build.
if [ "${INPUT_MTIMES:-true}" = true ]; then
	if line=$("$bin" mtimes "$tree" 2>"$bin_dir/mtimes.err"); then
		echo "$line"
		[ -z "${GITHUB_STEP_SUMMARY:-}" ] || echo "$line" >>"$GITHUB_STEP_SUMMARY"
	else
		[ -z "$line" ] || echo "$line"
		cat "$bin_dir/mtimes.err" >&2
		echo "::warning::$(tail -n1 "$bin_dir/mtimes.err"): tests that read files may run again"
	fi
fi

# A go command older than Go 1.24 does not know GOCACHEPROG and would run
# the job uncached without a word: say so (asked in the work tree). A go env
# that fails says nothing either way.
if known=$(cd "$tree" && GOCACHEPROG=probe go env GOCACHEPROG 2>/dev/null) && [ "$known" != probe ]; then
	echo "::warning::gobuildcache: this job's go command ($(cd "$tree" && go env GOVERSION 2>/dev/null)) does not know GOCACHEPROG, which Go 1.24 and later use: the job runs without the cache"
fi

# The go command's own cache directory, made if it is missing: `go clean
# -testcache` expires test results by a file there, and does nothing where
# the directory is not there yet (a fresh runner, before any go command
# made it), so a job that began with it was served the remote's results
# as (cached) all the same.
if gocache=$(cd "$tree" && go env GOCACHE 2>/dev/null) && [ -n "$gocache" ] && [ "$gocache" != off ]; then
	mkdir -p "$gocache" 2>/dev/null || true
fi

echo "GOCACHEPROG=$prog" >>"${GITHUB_ENV:?}"
echo "$bin_dir" >>"${GITHUB_PATH:?}"
echo "GOCACHEPROG=$prog"
