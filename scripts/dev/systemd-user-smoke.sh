#!/usr/bin/env bash
# Manual smoke test (not run by CI): starts a systemd --user manager, installs the real units with a drop-in for
# what the user manager cannot do, triggers socket activation with one call, and prints `systemctl --user status`.
# Needs root and a built tree (swift build). Groundwork for the issue-5 end-to-end test.
#
# What the user manager cannot do, found with this script (each made the service exit 226/NAMESPACE, or hang):
# PrivateTmp=, ProtectProc=/ProcSubset=, ProtectKernel*=, ProtectControlGroups=, ProtectSystem=/ProtectHome=;
# DynamicUser= and LoadCredential= do not apply (see ../shared/TESTING.md).
set -u
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/.build/debug}
UNITS=$(cd "$(dirname "$0")/../.." && pwd)/systemd
W=/var/tmp/bw-systemd-user
rm -rf "$W" /run/user/0; mkdir -p "$W/cfg" /run/user/0 /run/systemd/system; chmod 700 /run/user/0
export XDG_RUNTIME_DIR=/run/user/0
/lib/systemd/systemd --user > "$W/manager.log" 2>&1 &
MPID=$!
for _ in $(seq 100); do [ -S /run/user/0/systemd/private ] && break; sleep 0.05; done
U=/run/user/0/systemd/user
mkdir -p "$U/breakwater.socket.d" "$U/breakwater.service.d"
cp "$UNITS/breakwater.socket" "$UNITS/breakwater.service" "$U/"
printf '[Socket]\nListenStream=\nListenStream=%s/bw.sock\nSocketGroup=\n' "$W" > "$U/breakwater.socket.d/test.conf"
printf 'routes:\n  default: [{provider: openai, model: gpt-4o-mini}]\n' > "$W/cfg/breakwater.yaml"
cat > "$U/breakwater.service.d/test.conf" <<EOT
[Service]
ExecStart=
ExecStart=$BIN/breakwaterd --config $W/cfg/breakwater.yaml
DynamicUser=no
LoadCredential=
PrivateTmp=no
ProtectProc=default
ProcSubset=all
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectSystem=no
ProtectHome=no
EOT
systemctl --user daemon-reload
systemctl --user start breakwater.socket
"$BIN/breakwater" status --socket "$W/bw.sock"
sleep 2.5
systemctl --user status breakwater.service --no-pager
systemctl --user exit 2>/dev/null || kill "$MPID"
for _ in $(seq 100); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.05; done
kill -9 "$MPID" 2>/dev/null
rmdir /run/systemd/system 2>/dev/null
rm -rf "$W"
