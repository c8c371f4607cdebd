#!/usr/bin/env bash
# Benchmark for BENCHMARKS.md: Foreman's power-status read,
# GET /bmc/<node>/chassis/power/status, through one tenant's smart-proxy
# and the appliance's broker on loopback, driven by wrk. Three rows:
#
#   held       a node the tenant holds now: the broker reads the simulated
#              BMC (ipmi_sim over IPMI lanplus), answering from its power
#              cache ([broker] status_cache_ttl, 5 s) in between
#   not held   a node leased to another tenant now (and to this one later):
#              the broker answers "off" without asking any BMC
#   broker     the held read straight from the broker API, for the proxy's share
#
# and the proxy's resident memory (VmRSS, sampled every 0.2 s) under that load.
#
#   scripts/bench-proxy.sh
#
# BENCH_DURATION (10s), BENCH_THREADS (2) and BENCH_CONNECTIONS (16) set wrk's
# -d, -t and -c. Everything listens on 127.0.0.1, ports chosen by the kernel;
# state lives in a temporary directory removed on exit. A run takes about a
# minute.
#
# wrk cannot present a client certificate, which the proxy's HTTPS listener
# requires on /bmc, so wrk calls the proxy's plain-HTTP listener (http_listen),
# where the caller is identified by the reverse DNS of 127.0.0.1 (localhost),
# forward-verified, as the Ruby proxy does. The TLS path is measured by
# BenchmarkPowerStatus in e2e/, which this script falls back
# to if loopback's name cannot be trusted here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=${BENCH_DURATION:-10s}
threads=${BENCH_THREADS:-2}
conns=${BENCH_CONNECTIONS:-16}
[[ $duration =~ ^[0-9]+[smh]?$ && $threads =~ ^[0-9]+$ && $conns =~ ^[0-9]+$ ]] ||
	{ echo "bench-proxy: BENCH_DURATION, BENCH_THREADS, BENCH_CONNECTIONS must be numbers (duration like 10s)" >&2; exit 2; }

ensure_go
ensure_apt wrk openssl openipmi ipmitool qemu-system-x86 curl

work=$(mktemp -d /tmp/malleable-bench.XXXXXX)
serve_pid= proxy_pid= sampler_pid= wrk_pid=
cleanup() {
	local code=$?
	[ -n "$sampler_pid$wrk_pid" ] && kill $sampler_pid $wrk_pid 2>/dev/null || true
	for pid in $proxy_pid $serve_pid; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	done
	BMCSIM_DIR=$work/bmcsim scripts/bmc-sim.sh stop >/dev/null 2>&1 || true
	if [ "$code" -ne 0 ]; then
		for f in serve.log proxy.log; do
			[ -s "$work/$f" ] && { echo "--- $f (last lines)" >&2; tail -n 20 "$work/$f" >&2; }
		done
	fi
	rm -rf "$work"
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench-proxy: $*" >&2; exit 1; }

# wait_line FILE PREFIX PID: print the rest of the first line of FILE that
# starts with PREFIX, waiting up to 30 s while PID lives.
wait_line() {
	local file=$1 prefix=$2 pid=$3 line
	for _ in $(seq 300); do
		line=$(grep -m1 -F "$prefix" "$file" 2>/dev/null || true)
		[ -n "$line" ] && { echo "${line#*"$prefix"}"; return 0; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

# free_udp_port: a UDP port on loopback nobody listens on, for ipmi_sim.
free_udp_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 30000))
		ss -Hlun "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
	done
	die "no free UDP port"
}

# rss_kib PID: the process's resident set in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# sample_rss PID FILE: append PID's VmRSS to FILE every 0.2 s until killed.
sample_rss() {
	while kill -0 "$1" 2>/dev/null; do
		rss_kib "$1" >>"$2" 2>/dev/null || true
		sleep 0.2
	done
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

echo "==> machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr)"
echo "==> date: $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg) (other work skews the numbers)"

mkdir -p bin
version=$(git describe --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o bin/malleable ./cmd/malleable
echo "==> built bin/malleable ($version), $(go version | awk '{print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"

# The appliance: no M2 (its tgtd would take the machine's iSCSI portal).
printf '[m2]\nenabled = false\n' >"$work/appliance.ini"
bin/malleable serve --config "$work/appliance.ini" --data-dir "$work/state" --listen 127.0.0.1:0 \
	>"$work/serve.log" 2>&1 &
serve_pid=$!
api=$(wait_line "$work/serve.log" "malleable: admin API on http://" "$serve_pid") || die "serve did not start"
api=${api%%,*}
export MALLEABLE_SERVER=$api MALLEABLE_TOKEN
MALLEABLE_TOKEN=$(cat "$work/state/admin.token")
m() { bin/malleable "$@" >/dev/null; }

# One simulated BMC, private to this run.
port=$(free_udp_port)
BMCSIM_DIR=$work/bmcsim BMCSIM_PORT=$port scripts/bmc-sim.sh start 1 >/dev/null
echo "==> appliance on $api, simulated BMC on 127.0.0.1:$port"

# bench-1 is leased to tenant bench-a now; bench-2 (no BMC) to bench-b now
# and to bench-a from +2h, so bench-a knows it and reads it "off".
m node add bench-1 --mac 52:54:00:be:00:01 --bmc "127.0.0.1:$port" --bmc-user admin \
	--bmc-password-file "$work/bmcsim/bmc-1/password"
m node add bench-2 --mac 52:54:00:be:00:02
m tenant add bench-a
m tenant add bench-b
m lease add --node bench-1 --tenant bench-a --start now --duration 2h
m lease add --node bench-2 --tenant bench-b --start now --duration 2h
m lease add --node bench-2 --tenant bench-a --start +2h --duration 2h
m reconcile now
(umask 077 && bin/malleable tenant token bench-a >"$work/a.token" 2>/dev/null)
(umask 077 && head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/bmc.password")

# The proxy's client identity on plain HTTP: 127.0.0.1's name in /etc/hosts
# (Go's resolver reads it first), plus localhost.
trusted=$({ echo localhost; awk '$1 == "127.0.0.1" { for (i = 2; i <= NF; i++) if ($i ~ /^#/) break; else print $i }' /etc/hosts; } |
	sort -u | paste -sd, -)
cat >"$work/proxy.ini" <<EOF
[smart_proxy]
https_listen = off
http_listen = 127.0.0.1:0
trusted_hosts = $trusted
forward_verify = true
[broker]
url = http://$api
token_file = $work/a.token
[bmc]
username = bench-a
password_file = $work/bmc.password
[m2]
enabled = false
EOF
bin/malleable smart-proxy --config "$work/proxy.ini" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
proxy=$(wait_line "$work/proxy.log" "malleable: smart-proxy listening (http " "$proxy_pid") || die "smart-proxy did not start"
proxy=${proxy%%)*}
echo "==> smart-proxy (pid $proxy_pid) for bench-a on http://$proxy, trusting $trusted"

basic=$(printf 'bench-a:%s' "$(cat "$work/bmc.password")" | base64 -w0)
held_url=http://$proxy/bmc/bench-1/chassis/power/status
free_url=http://$proxy/bmc/bench-2/chassis/power/status
broker_url=http://$api/broker/v1/nodes/bench-1/power

# fallback: the in-process Go benchmark, when wrk cannot be let in.
fallback() {
	echo "==> $1"
	echo "==> falling back to the Go benchmark (TLS into the proxy, recorded BMC): BenchmarkPowerStatus"
	go test -run '^$' -bench PowerStatus -benchtime "$duration" ./e2e/
	exit 0
}

# Check every path answers as it should before measuring it.
got=$(curl -sS -H "Authorization: Basic $basic" "$held_url") || die "proxy does not answer"
case $got in
'{"action":"status","result":"off"}' | '{"action":"status","result":"on"}') ;;
*Untrusted* | *resolve* | *forward*) fallback "the proxy does not trust loopback over plain HTTP: $got" ;;
*) die "held read answered $got" ;;
esac
held_body=$got
got=$(curl -sS -H "Authorization: Basic $basic" "$free_url")
[ "$got" = '{"action":"status","result":"off"}' ] || die "not-held read answered $got"
free_body=$got
got=$(curl -sS -H "Authorization: Bearer $(cat "$work/a.token")" "$broker_url" | tr -d ' \n')
[[ $got == *'"held":true'* ]] || die "the broker does not say bench-a holds bench-1: $got"
echo "==> held:     GET $held_url -> $held_body (broker: $got)"
echo "==> not held: GET $free_url -> $free_body"

# Warm up: connections, the broker's power cache, the resolver's hosts cache.
wrk -t1 -c4 -d2s -H "Authorization: Basic $basic" "$held_url" >/dev/null
wrk -t1 -c4 -d1s -H "Authorization: Basic $basic" "$free_url" >/dev/null
idle_rss=$(rss_kib "$proxy_pid")

# run NAME URL AUTH: one wrk run, sampling the RSS of the proxy and the
# appliance; appends a summary row to $work/rows.
run() {
	local name=$1 url=$2 auth=$3 out=$work/wrk-$1.txt
	: >"$work/rss-proxy-$name" && : >"$work/rss-serve-$name"
	sample_rss "$proxy_pid" "$work/rss-proxy-$name" &
	sampler_pid=$!
	sample_rss "$serve_pid" "$work/rss-serve-$name" &
	sampler_pid="$sampler_pid $!"
	# In the background, so that a signal stops the run at once.
	wrk -t"$threads" -c"$conns" -d"$duration" --latency -H "Authorization: $auth" "$url" >"$out" &
	wrk_pid=$!
	wait "$wrk_pid"
	wrk_pid=
	kill $sampler_pid 2>/dev/null || true
	wait $sampler_pid 2>/dev/null || true
	sampler_pid=
	awk -v name="$name" -v prss="$(sort -n "$work/rss-proxy-$name" | tail -1)" \
		-v srss="$(sort -n "$work/rss-serve-$name" | tail -1)" '
		/^ +50%/ { p50 = $2 }
		/^ +99%/ { p99 = $2 }
		/requests in/ { n = $1 }
		/^Requests\/sec:/ { rps = $2 }
		/Non-2xx or 3xx responses:/ { bad += $NF }
		/Socket errors:/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
		END {
			proxy = name == "broker" ? "-" : sprintf("%.1f", prss / 1024)
			printf "%-9s %10s %9s %9s %9d %7d %9s %9.1f\n", name, rps, p50, p99, n, bad, proxy, srss / 1024
		}
	' "$out" >>"$work/rows"
}
echo "==> wrk -t$threads -c$conns -d$duration --latency (loopback; RSS = peak VmRSS during the run)"
run held "$held_url" "Basic $basic"
run not-held "$free_url" "Basic $basic"
run broker "$broker_url" "Bearer $(cat "$work/a.token")"

# The answers are still right after the load.
[ "$(curl -sS -H "Authorization: Basic $basic" "$held_url")" = "$held_body" ] || die "held read changed after the load"
[ "$(curl -sS -H "Authorization: Basic $basic" "$free_url")" = "$free_body" ] || die "not-held read changed after the load"

echo
echo "Power status on loopback: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(date -u +%Y-%m-%d), malleable $version"
printf '%-9s %10s %9s %9s %9s %7s %9s %9s\n' path "req/s" p50 p99 requests errors "proxy MiB" "appl. MiB"
cat "$work/rows"
echo
echo "proxy RSS: $(mib "$idle_rss") idle after warm-up, $(mib "$(rss_kib "$proxy_pid")") after the runs"
echo "held = through proxy and broker to the cached simulated BMC; not held = broker answers off itself;"
echo "broker = the held read with the tenant's token, no proxy. errors = non-2xx + socket errors."
echo "Plain HTTP into the proxy (wrk has no client certificates); TLS: BenchmarkPowerStatus."
