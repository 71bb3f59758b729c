#!/usr/bin/env bash
# Builds the micro-VNF task driver plugin (driver/) and the reactive Nomad (v1.6.3 with
# nomad-reactive.patch), cached by a key of their inputs:
#   $CACHE/plugins/<key>/nomad-driver-xen      -> symlink $CACHE/bin/nomad-driver-xen
#   $CACHE/nomad-reactive/<key>/nomad          -> symlink $CACHE/bin/nomad-reactive
# Usage: build.sh [CACHE_DIR]   (default ${VIMPROF_CACHE:-~/.cache/vimprof})
# Idempotent: a second run with unchanged inputs only re-links (seconds).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:-${VIMPROF_CACHE:-$HOME/.cache/vimprof}}
nomad_version=v1.6.3

step() { printf '==> %s\n' "$*"; }
fail() { # what failed, how to retry
    printf '\nbuild.sh: %s failed.\n  Retry with: %s\n' "$1" "$2" >&2
    exit 1
}

command -v go >/dev/null || fail "finding Go" "install Go >= 1.25 and rerun $here/build.sh $cache"
command -v patch >/dev/null || fail "finding patch(1)" "apt-get install patch && $here/build.sh $cache"
gover=$(go env GOVERSION)
mkdir -p "$cache/bin"

# key of a file list: sha256 over names and contents, plus the Go version
key_of() {
    (cd "$here" && for f in "$@"; do printf '%s\n' "$f"; cat "$f"; done) | sha256sum | cut -c1-16
}

# 1. the driver plugin -------------------------------------------------------------------------
mapfile -t plugin_inputs < <(cd "$here" && find driver -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) \
    ! -name '*_test.go' | LC_ALL=C sort)
pkey=$(key_of "${plugin_inputs[@]}")-$gover
plugin="$cache/plugins/$pkey/nomad-driver-xen"
if [ ! -x "$plugin" ]; then
    step "building nomad-driver-xen ($pkey)"
    mkdir -p "$(dirname "$plugin")"
    (cd "$here/driver" && GOFLAGS=-mod=readonly go build -trimpath -o "$plugin.tmp" .) \
        || fail "go build of the driver plugin (in $here/driver)" \
                "cd $here/driver && GOFLAGS=-mod=readonly go build -trimpath -o /tmp/nomad-driver-xen ."
    mv "$plugin.tmp" "$plugin"
else
    step "nomad-driver-xen cached: $plugin"
fi
ln -sfn "$plugin" "$cache/bin/nomad-driver-xen"

# 2. the reactive Nomad ------------------------------------------------------------------------
rkey=$(key_of nomad-reactive.patch reactive/go.mod reactive/go.sum)-$gover
rdir="$cache/nomad-reactive/$rkey"
reactive="$rdir/nomad"
if [ ! -x "$reactive" ]; then
    step "building the reactive Nomad $nomad_version ($rkey; several minutes, once)"
    build="$rdir/build"
    rm -rf "$build"
    mkdir -p "$build"
    cp "$here/reactive/go.mod" "$here/reactive/go.sum" "$build/"
    src="$(go env GOMODCACHE)/github.com/hashicorp/nomad@$nomad_version"
    if [ ! -d "$src" ]; then # from nomad-build/, whose go.sum verifies it (no checksum database)
        src=$(cd "$here/../../nomad-build" && GOFLAGS= go mod download -json \
            "github.com/hashicorp/nomad@$nomad_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    fi
    [ -n "$src" ] && [ -d "$src" ] \
        || fail "go mod download github.com/hashicorp/nomad@$nomad_version" \
                "cd $here/../../nomad-build && go mod download -json github.com/hashicorp/nomad@$nomad_version"
    cp -r "$src" "$build/nomad" && chmod -R u+w "$build/nomad"
    (cd "$build/nomad" && patch -p1 --forward --quiet < "$here/nomad-reactive.patch") \
        || fail "applying nomad-reactive.patch to $src" \
                "cd $build/nomad && patch -p1 --dry-run < $here/nomad-reactive.patch"
    (cd "$build" && GOFLAGS=-mod=readonly go build -trimpath -tags hashicorpmetrics -o "$reactive.tmp" \
        github.com/hashicorp/nomad) \
        || fail "go build of the reactive Nomad (in $build)" \
                "cd $build && GOFLAGS=-mod=readonly go build -trimpath -tags hashicorpmetrics -o /tmp/nomad github.com/hashicorp/nomad"
    mv "$reactive.tmp" "$reactive"
    rm -rf "$build"
else
    step "reactive Nomad cached: $reactive"
fi
ln -sfn "$reactive" "$cache/bin/nomad-reactive"
step "nomad-driver-xen: $cache/bin/nomad-driver-xen; reactive Nomad: $cache/bin/nomad-reactive"
