#!/bin/sh
# Install a Click configuration into a running ClickOS domain and start it, through XenStore
# (what sysml/clickos-ctl does; busybox sh + xenstore-* tools, so it runs in the lab's dom0).
#
#   NOT EXERCISED HERE: the vimprof Xen lab has no ClickOS image (build-clickos.sh).
#
# Usage: clickos-install.sh DOMAIN CONFIG.click     (DOMAIN: name or domid)
# Layout: /local/domain/<id>/data/clickos/<router>/{config_name, config/0..N (512-byte
# chunks), status = Stopped -> Running}; ClickOS creates /data/clickos when it boots.
set -eu
dom=$1 cfg=$2
case $dom in *[!0-9]*) domid=$(xl domid "$dom") ;; *) domid=$dom ;; esac
base=/local/domain/$domid/data/clickos
i=0; while ! xenstore-exists "$base" 2>/dev/null; do   # ClickOS still booting
    i=$((i + 1)); [ $i -le 100 ] || { echo "domain $dom is not a ClickOS domain" >&2; exit 1; }
    sleep 0.05
done
rid=0; while xenstore-exists "$base/$rid" 2>/dev/null; do rid=$((rid + 1)); done
r=$base/$rid
xenstore-write "$r/config_name" "$(basename "$cfg" .click)" "$r/status" Stopped
n=0; size=$(wc -c < "$cfg")
while [ $((n * 512)) -lt "$size" ]; do
    chunk=$(dd if="$cfg" bs=512 skip=$n count=1 2>/dev/null; echo x)  # keep trailing newlines
    xenstore-write "$r/config/$n" "${chunk%x}"
    n=$((n + 1))
done
xenstore-write "$r/status" Running
echo "domain $dom: router $rid ($cfg) Running"
