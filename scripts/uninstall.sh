#!/usr/bin/env bash
# Removes what scripts/install.sh installed, with the same PREFIX and DESTDIR. Keeps /etc/breakwater (your
# config, policy and API keys), the breakwater group and /var/lib/breakwater (recorded budget usage): remove
# those by hand if you mean to.
set -euo pipefail

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/usr/local}
PREFIX=${PREFIX%/}
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: removing from the system needs root: sudo $0" >&2
    exit 1
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now breakwater.socket breakwater-http.socket breakwater.service || true
fi
rm -f "$DESTDIR$PREFIX/bin/breakwaterd" "$DESTDIR$PREFIX/bin/breakwater" \
    "$DESTDIR/etc/systemd/system/breakwater.socket" "$DESTDIR/etc/systemd/system/breakwater-http.socket" \
    "$DESTDIR/etc/systemd/system/breakwater.service" \
    "$DESTDIR/usr/lib/systemd/catalog/breakwater.catalog" "$DESTDIR/usr/lib/sysusers.d/breakwater.conf" \
    "$DESTDIR/etc/breakwater/policy.example.yaml"
rm -rf "$DESTDIR$PREFIX/share/doc/breakwater"
if [ -z "$DESTDIR" ]; then
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    if command -v journalctl > /dev/null; then journalctl --update-catalog; fi
fi
echo "removed Breakwater from ${DESTDIR:-/} (PREFIX=$PREFIX); kept /etc/breakwater, the breakwater group and" \
    "/var/lib/breakwater"
