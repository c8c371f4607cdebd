#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently), then runs
# every gate: gofmt, go vet, staticcheck, govulncheck, the container image build, a short
# fuzz pass, and go test -race over all packages against real components.
#
#   scripts/test.sh
#   FUZZTIME=30s scripts/test.sh     (longer fuzzing; default 10s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_go
ensure_modules
ensure_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
ensure_go_tool govulncheck golang.org/x/vuln/cmd/govulncheck@v1.10.0
# Real components the tests drive: simulated BMCs (OpenIPMI's ipmi_sim, whose
# machines are qemu processes) and ipmitool as an independent IPMI client.
ensure_apt openipmi ipmitool qemu-system-x86 curl
# M2 storage: tgtd, real iSCSI initiators (libiscsi, qemu's iscsi driver),
# iPXE firmware for qemu nodes, nasm for boot sectors, and XFS tools for a
# reflink-capable loop filesystem.
ensure_apt tgt libiscsi-bin qemu-utils qemu-block-extra ipxe-qemu nasm xfsprogs
# The real peers' kits (../shared: hil/, foreman/) sit beside the checkout; a
# clone of a local checkout made elsewhere finds them beside its origin. The
# tests read the place from MALLEABLE_SHARED.
shared=../shared
origin=$(git config --get remote.origin.url 2>/dev/null || true)
if [ ! -d "$shared" ] && [ -n "$origin" ] && [ -d "$origin/../shared" ]; then
	shared="$origin/../shared"
fi
if [ -d "$shared" ]; then
	MALLEABLE_SHARED=$(cd "$shared" && pwd)
	export MALLEABLE_SHARED
	shared=$MALLEABLE_SHARED
fi
# The real HIL and OBMd ($shared/hil) for the hil allocator's tests: its
# Debian packages first (the kit's build.sh stops when dpkg has never heard
# of one), then one idempotent build, which also warms the Go build cache
# for the per-test builds appliance/allocator/hil/hiltest makes.
if [ -x "$shared/hil/build.sh" ]; then
	ensure_apt python3-flask python3-flask-sqlalchemy python3-flask-migrate python3-sqlalchemy \
		python3-passlib python3-schema python3-requests
	hilkit=${TMPDIR:-/tmp}/malleable-hilkit
	mkdir -p "$hilkit" && chmod 755 "$hilkit"
	echo "==> HIL kit: $shared/hil/build.sh $hilkit (first time 1-4 min)"
	"$shared/hil/build.sh" "$hilkit" > "$hilkit.log" 2>&1 || { tail -30 "$hilkit.log"; echo "HIL kit build failed (log: $hilkit.log)"; exit 1; }
else
	echo "==> HIL kit: ../shared/hil is absent; the real-HIL tests will fail (MALLEABLE_REQUIRE_REAL=1)"
fi
# Tests that need a real component fail instead of skipping when it is absent.
export MALLEABLE_REQUIRE_REAL=1
# A real Vault server binary (v1.21.0 built from the Go module proxy, cached):
# built in the background while the Foreman kit builds; ~5 min the first time.
vaultlog=${TMPDIR:-/tmp}/malleable-vault-build.log
echo "==> Vault: scripts/vault.sh in the background (first time ~5 min, then cached; log $vaultlog)"
scripts/vault.sh > "$vaultlog.out" 2> "$vaultlog" &
vaultpid=$!
# A real Foreman 3.12 (local/foreman:3.12, local/postgres:15) from the kit beside
# the repository, for the smart-proxy's test against it; idempotent, seconds when
# the images are built.
if [ -x "$shared/foreman/build.sh" ]; then
	echo "==> Foreman kit: $shared/foreman/build.sh (idempotent)"
	"$shared/foreman/build.sh"
else
	echo "==> Foreman kit: ../shared/foreman not found; TestRealForeman will fail under MALLEABLE_REQUIRE_REAL=1"
fi

if ! wait "$vaultpid"; then tail -30 "$vaultlog"; echo "Vault build failed (log: $vaultlog)"; exit 1; fi
MALLEABLE_VAULT=$(tail -n1 "$vaultlog.out")
export MALLEABLE_VAULT
echo "==> Vault: $MALLEABLE_VAULT"

echo "==> gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "==> go vet (compiles every package)"
go vet ./...

echo "==> staticcheck"
staticcheck ./...

echo "==> govulncheck"
# A known vulnerability reachable from our code (exit 3) fails the gate. The
# Go vulnerability database is online (GOVULNDB=file:///dir points at a local
# copy instead); where it cannot be reached the gate says so loudly and goes on.
vulnrc=0
vulnout=$(govulncheck ${GOVULNDB:+-db "$GOVULNDB"} ./... 2>&1) || vulnrc=$?
if [ "$vulnrc" -eq 0 ]; then
	echo "govulncheck: no known vulnerability reachable"
elif [ "$vulnrc" -ne 3 ] && grep -q 'fetching vulnerabilities' <<<"$vulnout"; then
	echo "==> govulncheck: SKIPPED, the vulnerability database is unreachable:"
	echo "$vulnout" | tail -n 3
else
	echo "$vulnout"
	exit 1
fi

if docker info >/dev/null 2>&1; then
	echo "==> container image (no registry)"
	scripts/image.sh malleable:test
	cid=$(docker run -d -p 127.0.0.1::8780 malleable:test)
	trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
	port=$(docker port "$cid" 8780/tcp | head -n1 | sed 's/.*://')
	for _ in $(seq 50); do
		curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '"ok"' || { docker logs "$cid"; echo "image: /healthz failed"; exit 1; }
	echo "image serves /healthz as user $(docker inspect -f '{{.Config.User}}' malleable:test)"
	docker rm -f "$cid" >/dev/null
else
	echo "==> container image: SKIPPED (no Docker engine reachable)"
fi

echo "==> fuzz (${FUZZTIME:-10s} per target)"
for target in $(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/func //' | sort -u); do
	pkg=$(dirname "$(grep -rlE "^func $target\(" --include='*_test.go' . | head -n1)")
	go test -run='^$' -fuzz="^$target\$" -fuzztime="${FUZZTIME:-10s}" "$pkg" >/dev/null || {
		echo "fuzz $target in $pkg failed; the failing input is under $pkg/testdata/fuzz/$target"; exit 1; }
	echo "fuzz $target ($pkg): ok"
done

echo "==> go test -race -shuffle=on ./... (builds with the race detector, then runs against real components: several minutes; each package prints when done)"
go test -race -shuffle=on -count=1 -timeout 45m ./...
