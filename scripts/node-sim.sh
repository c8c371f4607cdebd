#!/usr/bin/env bash
# A simulated bare-metal node for trying M2 without hardware: a qemu machine
# whose iPXE firmware network-boots the way a real server would.
#
#   scripts/node-sim.sh image FILE [MARKER]   write a 64 MiB demo golden image
#                                             whose boot sector prints MARKER
#                                             (default "Hello from M2") on the
#                                             serial port, then halts
#   scripts/node-sim.sh boot URL [SECONDS [UNTIL]]
#                                             boot a node that chains its iPXE
#                                             boot script from URL (an
#                                             appliance boot-script URL); print
#                                             its serial console until it shows
#                                             UNTIL or SECONDS (default 60) pass;
#                                             exits 1 if UNTIL never showed
#
# The guest reaches this machine's 127.0.0.1 as 10.0.2.2; URLs naming
# 127.0.0.1 or localhost are rewritten accordingly.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"

image() {
	local out=$1 marker=${2:-Hello from M2}
	[[ $marker =~ ^[[:print:]]{1,400}$ ]] && [[ $marker != *\'* ]] || { echo "node-sim: MARKER must be printable ASCII without quotes" >&2; exit 2; }
	ensure_apt nasm
	local tmp bytes
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	bytes=$(printf '%s' "$marker" | od -An -tu1 | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
	nasm -f bin "-dMARKER=$bytes" -o "$tmp/mbr.bin" "$here/templates/boottest/mbr.asm"
	rm -f "$out"
	truncate -s 64M "$out"
	dd if="$tmp/mbr.bin" of="$out" conv=notrunc status=none
	echo "node-sim: wrote $out (64 MiB, sparse) whose boot sector prints: $marker"
}

boot() {
	local url=$1 secs=${2:-60} until=${3:-}
	[[ $url =~ ^https?://[A-Za-z0-9.:/_%-]+$ ]] || { echo "node-sim: URL must be a plain http(s) URL" >&2; exit 2; }
	[[ $secs =~ ^[0-9]+$ ]] || { echo "node-sim: SECONDS must be a number" >&2; exit 2; }
	ensure_apt qemu-system-x86 ipxe-qemu
	url=${url/\/\/127.0.0.1/\/\/10.0.2.2}
	url=${url/\/\/localhost/\/\/10.0.2.2}
	local dir
	dir=$(mktemp -d)
	trap 'rm -rf "$dir"' RETURN
	printf '#!ipxe\ndhcp\nchain %s\n' "$url" >"$dir/boot.ipxe"
	: >"$dir/serial.log"
	echo "node-sim: booting; iPXE chains $url"
	qemu-system-x86_64 -accel tcg -m 256 -boot n -display none -no-reboot \
		-netdev "user,id=n0,tftp=$dir,bootfile=boot.ipxe" -device virtio-net-pci,netdev=n0 \
		-serial "file:$dir/serial.log" &
	local pid=$! end=$((SECONDS + secs))
	tail -f "$dir/serial.log" --pid=$pid 2>/dev/null &
	local tailpid=$!
	local seen=1
	while kill -0 $pid 2>/dev/null && [ $SECONDS -lt $end ]; do
		if [ -n "$until" ] && grep -qF -- "$until" "$dir/serial.log"; then
			seen=0
			break
		fi
		sleep 0.5
	done
	kill $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
	kill $tailpid 2>/dev/null || true
	echo
	echo "node-sim: node stopped after $((SECONDS - end + secs)) s"
	if [ -n "$until" ]; then
		[ $seen -eq 0 ] && echo "node-sim: the node printed \"$until\": it booted from its disk" || echo "node-sim: \"$until\" never showed"
		return $seen
	fi
}

case ${1:-} in
image) [ $# -ge 2 ] || { echo "usage: node-sim.sh image FILE [MARKER]" >&2; exit 2; }; image "$2" "${3:-}" ;;
boot) [ $# -ge 2 ] || { echo "usage: node-sim.sh boot URL [SECONDS [UNTIL]]" >&2; exit 2; }; boot "$2" "${3:-60}" "${4:-}" ;;
*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
