#!/usr/bin/env bash
# Builds a Vault server binary for tests and local development, and prints
# its path. Vault has no Debian package and `go install` refuses its module
# (replace directives), so this builds v1.21.0 from the Go module proxy as a
# dependency of a throwaway tools module in a temporary directory. The first
# build takes about 5 minutes on 2 cores and the binary is ~500 MB; later runs
# find it in the cache and return at once. Nothing here is committed.
#
#   scripts/vault.sh                       build (once) and print the path
#   MALLEABLE_CACHE=/some/dir scripts/vault.sh
#
# The binary lands in $MALLEABLE_CACHE/vault/vault-1.21.0 (default cache
# /var/cache/malleable). Tests find it there, or through MALLEABLE_VAULT.
# Vault >= 1.15 is BUSL-1.1: fine to run in tests, never ship it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"

version=1.21.0
cache=${MALLEABLE_CACHE:-/var/cache/malleable}
[[ $cache =~ ^/[A-Za-z0-9/._-]+$ ]] || { echo "vault.sh: MALLEABLE_CACHE must be an absolute plain path" >&2; exit 2; }
dir=$cache/vault
bin=$dir/vault-$version

if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "v$version"; then
	echo "$bin"
	exit 0
fi

ensure_go
mkdir -p "$dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/malleable-vault-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >go.mod <<MOD
module malleable.local/vaulttools

go 1.26
MOD
cat >tools.go <<'GO'
//go:build tools

// Package tools pins the Vault server module for scripts/vault.sh.
package tools

import _ "github.com/hashicorp/vault"
GO
echo "==> building Vault v$version from the Go module proxy (first time ~5 min, ~500 MB)" >&2
go get "github.com/hashicorp/vault@v$version" >&2
go mod tidy >&2
# Build to a temporary name and rename, so an interrupted build never leaves
# a half-written binary at the cached path.
go build -trimpath -o "$bin.tmp" github.com/hashicorp/vault >&2
mv "$bin.tmp" "$bin"
"$bin" version >&2
echo "$bin"
