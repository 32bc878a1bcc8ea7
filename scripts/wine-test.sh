#!/usr/bin/env bash
# Runs the unit tests as a Windows program under Wine (by hand; not in CI).
#
# Usage:
#   scripts/wine-test.sh ['-test.run regexp' ...]   default: -test.short -test.run 'Disk|Server|Protocol|Trim'
#
# Needs wine64 (Debian: apt-get install wine64) and python3. It builds the package's
# test binary for windows/amd64 with Go 1.24.0 (GOTOOLCHAIN, from the module proxy):
# later Go releases remove directories through an NT call that Wine 8 lacks, which
# fails every t.TempDir cleanup. The Go runtime (1.22 and later) needs
# bcryptprimitives.dll, which Wine 8 lacks too: this script writes one into the Wine
# prefix, a PE file without code whose one export, ProcessPrng, forwards to
# advapi32.SystemFunction036 (RtlGenRandom). The prefix is ${WINEPREFIX:-/tmp/gobuildcache-wine}.
set -euo pipefail
cd "$(dirname "$0")/.."

export WINEPREFIX="${WINEPREFIX:-/tmp/gobuildcache-wine}" WINEDEBUG="${WINEDEBUG:--all}"
WINE="$(command -v wine64 || echo /usr/lib/wine/wine64)"
[ -x "$WINE" ] || { echo "wine-test.sh: wine64 not found (apt-get install wine64)" >&2; exit 1; }

exe="$WINEPREFIX/gobuildcache.test.exe"
mkdir -p "$WINEPREFIX"
GOTOOLCHAIN=go1.24.0 GOOS=windows GOARCH=amd64 go test -c -o "$exe" .

dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$dll" ]; then
	"$WINE" cmd /c exit >/dev/null 2>&1 || true # creates the prefix
	python3 - "$dll" <<'PY'
import struct, sys
RVA = 0x1000
dllname, fname, fwd = b"bcryptprimitives.dll\0", b"ProcessPrng\0", b"advapi32.SystemFunction036\0"
off_funcs = 40; off_names = off_funcs + 4; off_ords = off_names + 4; off_dll = off_ords + 2
off_fname = off_dll + len(dllname); off_fwd = off_fname + len(fname); size = off_fwd + len(fwd)
# Export directory, its three one-entry tables, and the strings; the function's
# address lies inside the directory, which makes it a forwarder.
edata = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, RVA + off_dll, 1, 1, 1, RVA + off_funcs, RVA + off_names, RVA + off_ords)
edata += struct.pack("<IIH", RVA + off_fwd, RVA + off_fname, 0) + dllname + fname + fwd
dos = b"MZ" + b"\0" * 58 + struct.pack("<I", 0x40)
coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x2022)  # amd64, 1 section, DLL
opt = struct.pack("<HBBIIIII", 0x20B, 14, 0, 0, 0x200, 0, 0, RVA)  # PE32+, no entry point
opt += struct.pack("<QIIHHHHHHIIIIHHQQQQII", 0x180000000, 0x1000, 0x200, 6, 0, 0, 0, 6, 0, 0, 0x2000, 0x200, 0, 3, 0x100,
                   0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
opt += struct.pack("<II", RVA, size) + b"\0" * 8 * 15  # data directories: exports only
sec = struct.pack("<8sIIIIIIHHI", b".edata", size, RVA, 0x200, 0x200, 0, 0, 0, 0, 0x40000040)
hdr = dos + b"PE\0\0" + coff + opt + sec
open(sys.argv[1], "wb").write(hdr.ljust(0x200, b"\0") + edata.ljust(0x200, b"\0"))
PY
fi

if [ $# -eq 0 ]; then
	set -- -test.short -test.run 'Disk|Server|Protocol|Trim'
fi
exec "$WINE" "$exe" "$@"
