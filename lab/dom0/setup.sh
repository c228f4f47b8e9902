#!/bin/sh
# dom0 setup (from the share): Xen device modules, xenfs, xenstored, xenconsoled, and the
# bridge xenbr0 (10.99.0.1/24) that libxl's vif-bridge script plugs every vif into.
# xen-netback is NOT loaded here: the kernel phase loads it, the ours phase unloads it.
T() { echo "LAB-T $1 $(cut -d' ' -f1 /proc/uptime)"; }
[ -e /run/lab-setup-done ] && exit 0       # once per boot (main.sh run from the shell)
modprobe -a xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd bridge tun || exit 1
mount -t xenfs xenfs /proc/xen || exit 1
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored
xenstored --pid-file /run/xenstored.pid || exit 1
i=0; until xenstore-read / >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "LAB-FATAL xenstored does not answer"; exit 1; }; sleep 0.2
done
xen-init-dom0 >/dev/null || exit 1
xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || exit 1
T xen-daemons-up
echo "LAB-INFO $(xl info | awk -F': ' '/^xen_version/ { v = $2 } /^free_memory/ { m = $2 } END { print "xen " v ", free " m " MB" }'), dom0 $(uname -r)"
# guest kernel and initramfs into dom0's tmpfs: libxl mmaps them, which over 9p (page by
# page) made xl create take a minute
mkdir -p /tmp/guest && cp /mnt/host/guest/vmlinuz /mnt/host/guest/domU.cpio.gz /tmp/guest/ || exit 1
ip link add xenbr0 type bridge stp_state 0 forward_delay 0 || exit 1
ip addr add 10.99.0.1/24 dev xenbr0
ip link set xenbr0 up
touch /run/lab-setup-done
T dom0-setup-done
