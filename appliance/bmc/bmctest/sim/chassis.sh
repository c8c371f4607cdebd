#!/bin/bash
# chassis_control program of a bmctest Sim. ipmi_sim runs it as
#   chassis.sh get power|boot ...     and reads power:1, boot:pxe, ...
#   chassis.sh set power 1|0 | reset 1 | shutdown 1 | boot pxe|default|cdrom|bios|none
# Every call is appended to commands.log, every power-on to poweron.log.
d=@QDIR@
pidf=$d/qemu.pid
# bash for $EPOCHREALTIME: a date(1) per call would double the cost of a status poll.
now() { t=${EPOCHREALTIME/,/.}; }
note() { now; echo "$t $*" >>"$d/commands.log"; }
# alive: the process exists and is not a zombie. A -daemonize'd qemu is
# reparented to PID 1, which may reap it late, so kill -0 is not enough.
alive() {
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[ "${st%% *}" != Z ]
}
running() { [ -s "$pidf" ] && read -r pid <"$pidf" && alive "$pid"; }
bootdev() { bd=none; [ -s "$d/bootdev" ] && read -r bd <"$d/bootdev"; }
start() {
	running && return 0
	bootdev
	case $bd in pxe) q=n ;; cdrom) q=d ;; *) q=c ;; esac
	now
	echo "$t $bd" >>"$d/poweron.log"
	@QEMU@ -name bmcsim-@PORT@ -accel tcg -m 64 -display none -nodefaults -boot "$q" \
		-daemonize -pidfile "$pidf" @QEMUARGS@ </dev/null >>"$d/qemu.log" 2>&1
}
stop() {
	running || return 0
	kill "$pid" 2>/dev/null
	i=0
	while alive "$pid" && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
	alive "$pid" && kill -9 "$pid" 2>/dev/null
	rm -f "$pidf"
}
op=$1
shift
case $op in
get)
	for k in "$@"; do
		note get "$k"
		case $k in
		power) if running; then echo power:1; else echo power:0; fi ;;
		boot) bootdev; echo "boot:$bd" ;;
		*) echo "chassis.sh: cannot get $k" >&2; exit 1 ;;
		esac
	done
	;;
set)
	while [ $# -ge 2 ]; do
		k=$1 v=$2
		shift 2
		note set "$k" "$v"
		case $k in
		power) if [ "$v" = 1 ]; then start; else stop; fi || exit 1 ;;
		reset) { stop && start; } || exit 1 ;;
		shutdown) stop || exit 1 ;; # a guest that honours the ACPI request
		boot) echo "$v" >"$d/bootdev" ;;
		identify) shift $# ;;
		*) echo "chassis.sh: cannot set $k" >&2; exit 1 ;;
		esac
	done
	;;
*) exit 1 ;;
esac
