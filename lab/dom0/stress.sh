#!/bin/bash
# Diagnostic, from `lab/xenlab.sh shell`: bash /mnt/host/lab/stress.sh [N]
# Boots the domU with labstress=N: it runs N rounds of x=$(echo abc | tr b c | sed s/a/b/)
# and counts the busybox crashes (segfault / general protection fault) in its dmesg.  Then
# the same 1000 rounds in dom0 for comparison.  See lab/README.md, "Notes and pitfalls".
N=${1:-2000}
lsmod | grep -q '^xen_netback' || modprobe xen-netback
sed "s/labip=/labstress=$N labip=/" /tmp/domU.cfg > /tmp/stress.cfg
xl create /tmp/stress.cfg || exit 1
log=/var/log/xen/console/guest-domU.log
for _ in $(seq 1 600); do grep -q STRESS-DONE "$log" && break; sleep 2; done
grep -E 'STRESS-DONE|segfault|protection fault' "$log" | sed 's/^/domU: /'
xl destroy domU
busybox sh -c 'i=0; f=0; while [ $i -lt 1000 ]; do x=$(echo abc | busybox tr b c | busybox sed s/a/b/); [ "$x" = bcc ] || f=$((f+1)); i=$((i+1)); done; echo "dom0: 1000 rounds, wrong=$f"'
echo "dom0: crashes in dmesg: $(dmesg | grep -c -E 'segfault|protection fault')"
