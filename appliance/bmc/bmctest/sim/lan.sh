#!/bin/sh
[ "$1" = get ] || exit 0
shift
for k in "$@"; do
	case $k in
	ip_addr) v=@IP@ ;;
	ip_addr_src) v=static ;;
	subnet_mask) v=@MASK@ ;;
	mac_addr) v=@MAC@ ;;
	default_gw_ip_addr) v=@GW@ ;;
	backup_gw_ip_addr) v=0.0.0.0 ;;
	*) v=00:00:00:00:00:00 ;;
	esac
	echo "$k:$v"
done
