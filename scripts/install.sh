#!/usr/bin/env bash
# Installs Breakwater: the release binaries, the systemd units, the journal catalog, the `breakwater` group, an
# example config (never over one that exists) and the README. Run as root (sudo scripts/install.sh, or make install).
#
#   scripts/install.sh [--no-build] [--bin-dir DIR]
#
#   --no-build     install binaries that are already built (default: swift build -c release first)
#   --bin-dir DIR  where those binaries are (default: .build/release)
#
# Environment: PREFIX (default /usr/local) for bin/ and share/doc/; DESTDIR to stage everything under a directory
# (packaging, tests). With a DESTDIR nothing on the running system is touched: no group is added, no catalog
# rebuilt, no unit enabled.
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

build=1
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --bin-dir)
            [ $# -ge 2 ] || { echo "install.sh: --bin-dir needs a directory" >&2; exit 2; }
            bin_dir=$2
            shift ;;
        --bin-dir=*) bin_dir=${1#--bin-dir=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX must be an absolute path (got: $PREFIX)" >&2; exit 2 ;;
esac
PREFIX=${PREFIX%/}
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in
        /*) ;;
        *) DESTDIR=$PWD/$DESTDIR ;;
    esac
    DESTDIR=${DESTDIR%/}
fi

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing into the system needs root: sudo $0 (or set DESTDIR to stage it)" >&2
    exit 1
fi

if [ "$build" -eq 1 ]; then
    if ! command -v swift > /dev/null; then
        echo "install.sh: swift is not on this PATH (sudo resets it): build first as yourself with" >&2
        echo "  swift build -c release && sudo $0 --no-build" >&2
        exit 1
    fi
    echo "== swift build -c release"
    # Under sudo, build as the user who ran it, so .build/ does not end up owned by root.
    as_user=()
    if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        as_user=(runuser -u "$SUDO_USER" -- env "PATH=$PATH")
    fi
    "${as_user[@]}" swift build -c release --product breakwaterd
    "${as_user[@]}" swift build -c release --product breakwater
fi
bin_dir=${bin_dir:-.build/release}
for exe in breakwaterd breakwater; do
    if [ ! -x "$bin_dir/$exe" ]; then
        echo "install.sh: $bin_dir/$exe is missing: build it (swift build -c release) or give --bin-dir" >&2
        exit 1
    fi
done

root=$DESTDIR
bin=$root$PREFIX/bin
units=$root/etc/systemd/system
etc=$root/etc/breakwater
echo "== installing into ${DESTDIR:-/} (PREFIX=$PREFIX)"

install -d -m 0755 "$bin"
install -m 0755 "$bin_dir/breakwaterd" "$bin/breakwaterd"
install -m 0755 "$bin_dir/breakwater" "$bin/breakwater"
echo "$PREFIX/bin/breakwaterd, $PREFIX/bin/breakwater"

# The units name /usr/local; point them at this PREFIX instead (ExecStart= and the Documentation= link).
install -d -m 0755 "$units"
for unit in breakwater.socket breakwater-http.socket breakwater.service; do
    sed "s|/usr/local/|$PREFIX/|g" "systemd/$unit" > "$units/$unit.tmp"
    chmod 0644 "$units/$unit.tmp"
    mv -f "$units/$unit.tmp" "$units/$unit"
done
echo "/etc/systemd/system/breakwater.socket, breakwater-http.socket, breakwater.service (ExecStart=$PREFIX/bin/breakwaterd)"

install -D -m 0644 systemd/breakwater.catalog "$root/usr/lib/systemd/catalog/breakwater.catalog"
echo "/usr/lib/systemd/catalog/breakwater.catalog"

# SocketGroup=breakwater: apps in this group may connect.
install -D -m 0644 systemd/breakwater.sysusers "$root/usr/lib/sysusers.d/breakwater.conf"
echo "/usr/lib/sysusers.d/breakwater.conf (group breakwater)"

# The daemon runs as a dynamic user, so the config must be world-readable; it holds no secrets (the config
# checker refuses keys in it). Keys go in credentials/, readable by root only (systemd's LoadCredential= reads them
# as root and hands the service a private copy).
[ -d "$etc" ] || install -d -m 0755 "$etc"   # an existing /etc/breakwater keeps its mode
if [ -e "$etc/breakwater.yaml" ]; then
    echo "/etc/breakwater/breakwater.yaml exists: kept as it is"
else
    install -m 0644 breakwater.example.yaml "$etc/breakwater.yaml"
    echo "/etc/breakwater/breakwater.yaml (from breakwater.example.yaml)"
fi
install -m 0644 policy.example.yaml "$etc/policy.example.yaml"
echo "/etc/breakwater/policy.example.yaml"
install -d -m 0700 "$etc/credentials"
chmod 0700 "$etc/credentials"
echo "/etc/breakwater/credentials (mode 0700)"
# The unit's LoadCredential= fails the service when its file is missing; an empty one lets the daemon start and say
# which provider has no key (its calls fail with NO_CREDENTIAL) until the real key is written there.
for cred in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' systemd/breakwater.service); do
    if [ ! -e "$etc/credentials/$cred" ]; then
        install -m 0600 /dev/null "$etc/credentials/$cred"
        echo "/etc/breakwater/credentials/$cred (empty: put the key in it)"
    fi
done

install -D -m 0644 README.md "$root$PREFIX/share/doc/breakwater/README.md"
echo "$PREFIX/share/doc/breakwater/README.md"

if [ -n "$DESTDIR" ]; then
    echo "== staged under $DESTDIR; on the target system, run:"
    echo "  systemd-sysusers breakwater.conf && journalctl --update-catalog"
    echo "  systemctl daemon-reload && systemctl enable --now breakwater.socket breakwater-http.socket"
    exit 0
fi

if command -v systemd-sysusers > /dev/null; then
    systemd-sysusers breakwater.conf
elif ! getent group breakwater > /dev/null; then
    groupadd --system breakwater
fi
if command -v journalctl > /dev/null; then
    journalctl --update-catalog
fi

enable="systemctl daemon-reload && systemctl enable --now breakwater.socket breakwater-http.socket"
if [ -d /run/systemd/system ]; then
    echo "== $enable"
    systemctl daemon-reload
    systemctl enable --now breakwater.socket breakwater-http.socket
else
    echo "== systemd is not running here; once it is, run:"
    echo "  $enable"
fi
cat <<EOF
== next
  Put each provider's API key in /etc/breakwater/credentials/<name> (mode 0600), e.g.
    printf %s "\$OPENAI_API_KEY" | install -m 0600 /dev/stdin /etc/breakwater/credentials/openai_api_key
  The unit loads openai_api_key (LoadCredential=); add a line per other provider with
  systemctl edit breakwater.service. Edit /etc/breakwater/breakwater.yaml, check it with
  $PREFIX/bin/breakwater config check, then: systemctl reload breakwater.service
  Add the users whose apps may call the daemon to the breakwater group.
EOF
