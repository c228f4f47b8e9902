#!/bin/sh
# Self-test stand-in for `netback --xen`, to check the lab's own plumbing (the whole ours
# phase and the toolstack contract) while the real daemon cannot do real Xen yet:
#   NETBACK_BIN=lab/selftest/kernel-netback.sh lab/xenlab.sh check
# It loads the kernel xen-netback (which then serves every vif) and waits for SIGTERM.
case " $* " in *" --xen "*) ;; *) echo "stand-in: expected --xen" >&2; exit 2 ;; esac
modprobe xen-netback || exit 1
echo "stand-in: kernel xen-netback loaded; waiting for SIGTERM"
trap 'rmmod xen-netback 2>/dev/null; echo "stand-in: SIGTERM, exiting 0"; exit 0' TERM INT
while :; do sleep 1 & wait $!; done
