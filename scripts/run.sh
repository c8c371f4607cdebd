#!/usr/bin/env bash
# The run command: builds the static binary into ./bin and starts the
# appliance. With no arguments it runs on embedded defaults; arguments go to
# `malleable serve` (for example --config appliance.ini).
#
#   scripts/run.sh [serve flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_go
ensure_modules
# The embedded M2 storage backend runs tgtd (as root).
[ "$(id -u)" -eq 0 ] && ensure_apt tgt
mkdir -p bin
version=$(git describe --always --dirty 2>/dev/null || echo dev)
echo "==> go build bin/malleable ($version; the first build compiles every dependency: a minute or two)"
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o bin/malleable ./cmd/malleable
echo "==> built bin/malleable ($version); starting the appliance (Ctrl-C stops it)"
exec bin/malleable serve "$@"
