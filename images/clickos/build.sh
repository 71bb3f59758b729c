#!/bin/sh
# Build the vimprof test micro-VNF (a multiboot v1 ELF32 kernel) with GNU binutils.
#
# Usage: images/clickos/build.sh [OUTDIR]
#   OUTDIR defaults to images/clickos/build/ (next to this script).
# Prints the absolute path of the built kernel (OUTDIR/testvnf.elf) on stdout.
# Idempotent: rerunning rebuilds the same bytes in place; the final file is
# replaced atomically, so a concurrent reader never sees a half-written kernel.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
outdir=${1:-"$here/build"}

AS=${AS:-as}
LD=${LD:-ld}
for tool in "$AS" "$LD"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: '$tool' not found: install binutils (e.g. apt-get install binutils)" >&2
        exit 1
    fi
done

mkdir -p "$outdir"
outdir=$(CDPATH= cd -- "$outdir" && pwd)

tmp=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

"$AS" --32 -o "$tmp/testvnf.o" "$here/testvnf.S"
"$LD" -m elf_i386 -nostdlib --build-id=none -T "$here/testvnf.ld" \
    -o "$tmp/testvnf.elf" "$tmp/testvnf.o"

mv -f "$tmp/testvnf.elf" "$outdir/testvnf.elf"
echo "$outdir/testvnf.elf"
