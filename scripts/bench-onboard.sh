#!/usr/bin/env bash
# Benchmark for BENCHMARKS.md: tenant onboarding on the real Docker engine
# with the Foreman kit's images (../shared/foreman/build.sh).
#
#   scripts/bench-onboard.sh            # 10 tenants one after another, then 5 at once
#   BENCH_SEQ=3 BENCH_PAR=2 scripts/bench-onboard.sh
#
# It runs one appliance ([tenants] runtime = docker, M2 off) on a temporary
# data directory, warms the template database with a first tenant (not
# counted), then onboards BENCH_SEQ tenants one after another and BENCH_PAR
# at once, each with `malleable tenant add`, and prints per tenant: the
# whole onboarding, the foreman step (Foreman's own start, from the
# template), the rest (everything but Foreman's start), and the resident
# memory of its Foreman and smart-proxy (docker stats). Every tenant is
# offboarded at the end; the shared PostgreSQL and its template stay.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seq_n=${BENCH_SEQ:-10}
par_n=${BENCH_PAR:-5}
[[ $seq_n =~ ^[0-9]+$ && $par_n =~ ^[0-9]+$ ]] || { echo "bench-onboard: BENCH_SEQ and BENCH_PAR must be numbers" >&2; exit 2; }
for img in local/foreman:3.12 local/postgres:15; do
	docker image inspect "$img" >/dev/null 2>&1 || { echo "bench-onboard: image $img missing: run ../shared/foreman/build.sh" >&2; exit 1; }
done
ensure_go

work=$(mktemp -d "${TMPDIR:-/tmp}/malleable-bench-onboard.XXXXXX")
bin=$work/malleable
CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/malleable
cat >"$work/appliance.ini" <<INI
[m2]
enabled = false
[tenants]
runtime = docker
foreman_image = local/foreman:3.12
postgres_image = local/postgres:15
INI
"$bin" serve --config "$work/appliance.ini" --data-dir "$work/state" --listen 127.0.0.1:0 2>"$work/serve.log" &
pid=$!
tenants=()
cleanup() {
	for t in "${tenants[@]}"; do "$bin" tenant offboard "$t" --token-file "$work/state/admin.token" --server "$addr" >/dev/null 2>&1 || true; done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
addr=
for _ in $(seq 100); do
	addr=$(sed -n 's#^malleable: admin API on http://\([^,]*\),.*#\1#p' "$work/serve.log" | head -n1)
	[ -n "$addr" ] && break
	sleep 0.2
done
[ -n "$addr" ] || { cat "$work/serve.log"; echo "bench-onboard: the appliance did not start" >&2; exit 1; }
cli() { "$bin" "$@" --token-file "$work/state/admin.token" --server "$addr"; }

# onboard NAME: adds the tenant and prints "NAME total foreman rest" in seconds.
onboard() {
	local name=$1 start end id json
	start=$(date +%s.%N)
	cli tenant add "$name" >"$work/$name.out" 2>&1 || { cat "$work/$name.out"; return 1; }
	end=$(date +%s.%N)
	id=$(cli tenant jobs "$name" -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
	json=$(cli tenant job "$name" "$id" -o json)
	python3 - "$name" "$start" "$end" "$json" <<'PY'
import json, sys
from datetime import datetime
name, start, end, job = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
def secs(s):
    t = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return t(s["finished_at"]) - t(s["started_at"])
foreman = sum(secs(s) for s in job["steps"] if s["name"] == "foreman")
total = end - start
print(f"{name} {total:.1f} {foreman:.1f} {total - foreman:.1f}")
PY
}

rss() { docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep -E "malleable-$1-(foreman|smart-proxy)" | awk '{print $1, $2}'; }

echo "== warm-up (template database, proxy image): not counted"
tenants+=(bench-warm)
onboard bench-warm

echo "== $seq_n one after another: tenant total_s foreman_s rest_s"
for i in $(seq 1 "$seq_n"); do
	tenants+=("bench-s$i")
	onboard "bench-s$i"
done

echo "== $par_n at once: tenant total_s foreman_s rest_s"
pids=()
for i in $(seq 1 "$par_n"); do
	tenants+=("bench-p$i")
	onboard "bench-p$i" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

echo "== resident memory (docker stats)"
for t in "${tenants[@]}"; do rss "$t"; done
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep -E '^malleable-postgres ' || true
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
