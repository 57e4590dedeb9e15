#!/usr/bin/env bash
# The main job on built-in defaults, with no API key and no internet: starts a fake provider and breakwaterd on
# a temporary socket, sends calls through the client shim, prints what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --product breakwater >/dev/null
swift build --product breakwaterd >/dev/null
swift build --product fake-provider >/dev/null
exec .build/debug/breakwater demo "$@"
