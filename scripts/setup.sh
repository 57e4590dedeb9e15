#!/usr/bin/env bash
# Installs the system packages Breakwater builds and tests against, on Debian 12 (or Ubuntu). Idempotent: does
# nothing when they are already there. Runs apt-get as root, or through sudo when not root.
set -euo pipefail

need=()
pkg-config --exists libcurl 2>/dev/null || need+=(libcurl4-openssl-dev)
pkg-config --exists libsystemd 2>/dev/null || need+=(libsystemd-dev)
pkg-config --exists sqlite3 2>/dev/null || need+=(libsqlite3-dev)   # GRDB: the daemon's state store
command -v pkg-config >/dev/null || need+=(pkg-config)
# systemd-socket-activate and systemd-analyze (socket-activation test); systemd-journald and journalctl for the
# audit tests (JournalTestKit runs a private journald; it also uses unshare, nsenter and setpriv from util-linux).
command -v systemd-socket-activate >/dev/null || need+=(systemd)
{ [ -x /lib/systemd/systemd-journald ] || [ -x /usr/lib/systemd/systemd-journald ]; } || need+=(systemd)
command -v journalctl >/dev/null || need+=(systemd)
command -v nsenter >/dev/null && command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# venv + ensurepip: the Python client's tests run in a virtualenv of their own (pytest, the openai SDK from PyPI).
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# curl: the HTTP front's tests call it as any app would (curl --unix-socket).
command -v curl >/dev/null || need+=(curl)
# nghttpx: a real HTTP/2 server for the h2c upstream test.
command -v openssl >/dev/null || need+=(openssl)
command -v nghttpx >/dev/null || [ -x /usr/sbin/nghttpx ] || need+=(nghttp2-proxy)
# The cluster store: hiredis to build against, and a real redis-server the fleet tests start on Unix sockets.
[ -f /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
command -v redis-server >/dev/null || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: the Swift toolchain (6.x) must be on PATH" >&2; exit 1; }
