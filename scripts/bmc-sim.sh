#!/usr/bin/env bash
# Simulated BMCs for trying Malleable without hardware: each is OpenIPMI's
# ipmi_sim (IPMI 2.0 lanplus on a loopback port) whose chassis powers a small
# qemu machine on and off for real. They use the very files the tests use
# (appliance/bmc/bmctest/sim/).
#
#   scripts/bmc-sim.sh start [N]   start N BMCs (default 2) on 127.0.0.1:9623, :9624, ...
#   scripts/bmc-sim.sh status      show each BMC's power
#   scripts/bmc-sim.sh stop        stop them and their machines
#
# State lives in $BMCSIM_DIR (default /tmp/malleable-bmcsim): bmc-<i>/password
# holds each BMC's random admin password (user "admin"). Ports start at
# $BMCSIM_PORT (default 9623).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
sim=$here/appliance/bmc/bmctest/sim
root=${BMCSIM_DIR:-/tmp/malleable-bmcsim}
base=${BMCSIM_PORT:-9623}

start() {
	local n=${1:-2}
	[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 32 ] || { echo "bmc-sim: N must be 1-32" >&2; exit 2; }
	ensure_apt openipmi ipmitool qemu-system-x86
	[[ $root =~ ^[A-Za-z0-9/._-]+$ ]] || { echo "bmc-sim: BMCSIM_DIR must be a plain path" >&2; exit 2; }
	mkdir -p "$root"
	for i in $(seq 1 "$n"); do
		local d=$root/bmc-$i port=$((base + i - 1))
		if [ -f "$d/ipmi_sim.pid" ] && kill -0 "$(cat "$d/ipmi_sim.pid")" 2>/dev/null; then
			echo "bmc-$i: already running on 127.0.0.1:$port"
			continue
		fi
		rm -rf "$d" && mkdir -p "$d/state" && chmod 700 "$d"
		head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/password"
		chmod 600 "$d/password"
		local mac
		mac=$(printf '52:54:00:99:%02x:%02x' $((port >> 8 & 255)) $((port & 255)))
		for f in lan.conf bmc.emu chassis.sh lan.sh; do
			sed -e "s|@DIR@|$d|g" -e "s|@QDIR@|'$d'|g" -e "s|@PORT@|$port|g" \
				-e "s|@GUID@|$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')|g" \
				-e "s|@USER@|admin|g" -e "s|@PASSWORD@|$(cat "$d/password")|g" \
				-e "s|@QEMU@|$(command -v qemu-system-x86_64)|g" -e "s|@QEMUARGS@||g" \
				-e "s|@IP@|127.0.0.1|g" -e "s|@MASK@|255.0.0.0|g" -e "s|@MAC@|$mac|g" -e "s|@GW@|0.0.0.0|g" \
				"$sim/$f" >"$d/$f"
		done
		chmod 700 "$d/chassis.sh" "$d/lan.sh"
		(cd "$d" && exec setsid ipmi_sim -c lan.conf -f bmc.emu -s state -n </dev/null >ipmi_sim.log 2>&1) &
		echo $! >"$d/ipmi_sim.pid"
		for _ in $(seq 50); do
			ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" -U admin -P "$(cat "$d/password")" chassis power status >/dev/null 2>&1 && break
			sleep 0.1
		done
		echo "bmc-$i: 127.0.0.1:$port user admin, password in $d/password ($(power "$d" "$port"))"
	done
}

power() {
	ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$2" -U admin -P "$(cat "$1/password")" chassis power status 2>&1 || true
}

status() {
	for d in "$root"/bmc-*; do
		[ -d "$d" ] || continue
		local port
		port=$(awk '/addr 127.0.0.1/ {print $3}' "$d/lan.conf")
		echo "$(basename "$d"): 127.0.0.1:$port $(power "$d" "$port")"
	done
}

stop() {
	for d in "$root"/bmc-*; do
		[ -d "$d" ] || continue
		[ -f "$d/ipmi_sim.pid" ] && kill "$(cat "$d/ipmi_sim.pid")" 2>/dev/null || true
		# Killing ipmi_sim leaves its machine running: stop that too.
		[ -s "$d/qemu.pid" ] && kill "$(cat "$d/qemu.pid")" 2>/dev/null || true
		rm -rf "$d"
		echo "$(basename "$d"): stopped"
	done
}

case ${1:-} in
start) start "${2:-2}" ;;
status) status ;;
stop) stop ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
