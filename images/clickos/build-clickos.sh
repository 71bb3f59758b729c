#!/bin/sh
# Build a real ClickOS micro-VNF image (clickos_x86_64, a Xen PV unikernel) from source.
#
#   NOT RUNNABLE ON THE vimprof DEVELOPMENT MACHINES OR IN CI: it clones Xen, MiniOS, the
#   newlib/lwIP toolchain and ClickOS from GitHub, which these machines cannot reach. Run it on
#   a Debian/Ubuntu host with internet access, then copy the image into the Xen lab (CLICKOS.md).
#
# Usage: CLICKOS_BUILD=1 images/clickos/build-clickos.sh [WORKDIR]    (default: ./clickos-build)
# Output: WORKDIR/out/clickos_x86_64 (stripped), clickos_x86_64.gz, clickos_x86_64_nostrip.
# Needs: git gcc g++ make autoconf automake texinfo wget (apt-get install ...), ~3 GB, ~30 min.
set -eu

if [ "${CLICKOS_BUILD:-}" != 1 ]; then
    cat >&2 <<'MSG'
build-clickos.sh: not run. It downloads sources from GitHub and is meant for a machine with
internet access (not the vimprof development machines or CI). Set CLICKOS_BUILD=1 to run it
there; see images/clickos/CLICKOS.md.
MSG
    exit 2
fi

work=${1:-"$PWD/clickos-build"}
# Pinned revisions known to build together (ClickOS' last maintained line, Xen 4.11 headers).
XEN_REPO=${XEN_REPO:-https://github.com/xen-project/xen}
XEN_REF=${XEN_REF:-RELEASE-4.11.4}
TOOLCHAIN_REPO=${TOOLCHAIN_REPO:-https://github.com/sysml/toolchain}
MINIOS_REPO=${MINIOS_REPO:-https://github.com/sysml/mini-os}
CLICKOS_REPO=${CLICKOS_REPO:-https://github.com/sysml/clickos}
CLICKOS_REF=${CLICKOS_REF:-master}
jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)

mkdir -p "$work" && cd "$work"
fetch() { # repo ref dir
    [ -d "$3/.git" ] || git clone --depth 1 -b "$2" "$1" "$3"
}
fetch "$XEN_REPO" "$XEN_REF" xen            # only its public headers are used
fetch "$TOOLCHAIN_REPO" master toolchain    # newlib + lwIP cross-built for MiniOS
fetch "$MINIOS_REPO" master minios
fetch "$CLICKOS_REPO" "$CLICKOS_REF" clickos

export XEN_ROOT="$work/xen" MINIOS_ROOT="$work/minios" TOOLCHAIN_ROOT="$work/toolchain"
(cd toolchain && make -j"$jobs" all)
export NEWLIB_ROOT="$TOOLCHAIN_ROOT/x86_64-root/x86_64-xen-elf"
export LWIP_ROOT="$TOOLCHAIN_ROOT/x86_64-root/x86_64-xen-elf"

cd clickos
./configure --enable-minios --with-xen="$XEN_ROOT" --with-minios="$MINIOS_ROOT" \
    --with-newlib="$NEWLIB_ROOT" --with-lwip="$LWIP_ROOT"
make -j"$jobs" elemlist
make -j"$jobs" minios
mkdir -p "$work/out"
cp minios/build/clickos_x86_64* "$work/out/"
ls -l "$work/out"
