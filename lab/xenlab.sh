#!/bin/bash
# lab/xenlab.sh: the netback project's Xen-in-QEMU lab.
#
# Boots Xen 4.17 (Debian's packages) in QEMU (TCG, no KVM, no network leaving the VM)
# with a PV dom0 and PV domUs, and in one boot measures the network path
#   phase "kernel": Linux xen-netback  <-> domU xen-netfront
#   phase "ours":   /mnt/host/netback --xen (this repo) <-> domU xen-netfront
# then checks the toolstack contract against our daemon (detach, attach, destroy,
# second create, SIGTERM) and prints a side-by-side table.  See lab/README.md.
#
# Usage: lab/xenlab.sh build|run|check|shell|clean
#   build  host packages (apt, idempotent), dom0/domU images (cached in $LAB_WORK,
#          rebuilt when their inputs change), cargo build --release of netback and
#          netfront-test, everything dom0 needs copied into the 9p share
#   run    build, boot once, measure kernel then ours (RUNS runs each), table
#   check  the CI variant of run: short measurements, functional checks only
#   shell  build, boot to an interactive root shell in dom0 (Ctrl-a x quits)
#   clean  remove $LAB_WORK
set -Eeuo pipefail
trap 'echo "[lab] ERROR: \"$BASH_COMMAND\" failed (line $LINENO); logs in ${LAB_WORK:-/var/tmp/netback-lab}/logs" >&2' ERR

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LAB_DIR/.." && pwd)
W=${LAB_WORK:-/var/tmp/netback-lab}
RESULTS=${RESULTS:-$LAB_DIR/results}
SHARE=$W/share                      # mounted in dom0 at /mnt/host (virtio-9p)
BOOT=$W/boot                        # xen, vmlinuz, dom0.cpio
LOGS=$W/logs
STAMPS=$W/stamps

# --- knobs ------------------------------------------------------------------------------
ACCEL=${ACCEL:-tcg}                  # e.g. tcg,thread=single
# no XSAVE: with it, guest processes' register state gets corrupted now and then under
# QEMU 7.2 TCG + Xen 4.17 (heap-corruption crashes, xl aborts; see README)
CPU=${CPU:-max,-xsave,-xsaveopt,-xsavec,-xsaves}
MEM=${MEM:-4G}                      # QEMU RAM: Xen + dom0 + up to two 512 MB domUs
SMP=${SMP:-2}
DOM0_MEM=${DOM0_MEM:-2048M}
NICE=${NICE:-10}                    # QEMU, debootstrap and cargo run under nice
XEN_EXTRA=${XEN_EXTRA:-}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
XEN_PKG=xen-hypervisor-4.17-amd64
# dom0 userland (debootstrap --variant=minbase --include=...)
DOM0_PKGS=xen-utils-4.17,xenstore-utils,iproute2,iperf3,kmod,bridge-utils,iputils-ping,procps,ethtool,tcpdump,strace,busybox-static,psmisc
# kernel modules kept in dom0 (with their dependencies); everything else is dropped
DOM0_MODS="xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-netback bridge tun veth dummy 9p 9pnet_virtio virtio_pci"
# modules in the domU initramfs (xen-netfront, and what netfront-test --xen needs)
DOMU_MODS="xen-netfront xenfs xen-evtchn xen-gntalloc xen-gntdev"

log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ========================================================================================
# host packages
# ========================================================================================
HOST_PKGS="qemu-system-x86 debootstrap cpio"

host_deps() { # installs what is missing; returns non-zero (with a reason on stdout) if it cannot
    local need=() p
    for p in $HOST_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then echo "not root, cannot apt-get install ${need[*]}"; return 1; fi
    log "installing host packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${need[@]}" >"$LOGS/apt.log" 2>&1; then
        apt-get update >>"$LOGS/apt.log" 2>&1 || true
        if ! apt-get install -y --no-install-recommends "${need[@]}" >>"$LOGS/apt.log" 2>&1; then
            echo "apt-get install ${need[*]} failed: $(tail -1 "$LOGS/apt.log")"; return 1
        fi
    fi
    command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing after install"; return 1; }
}

# ========================================================================================
# cache: every stage has a key (hash of its function's text and its inputs); it is
# rebuilt when the stored key differs or an output is missing
# ========================================================================================
key_of() { # key_of <function> [more inputs...]
    { declare -f "$1"; shift; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}
hash_files() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { # fresh <stage> <key> <outputs...>
    local s=$1 k=$2 f; shift 2
    [ -f "$STAMPS/$s" ] && [ "$(cat "$STAMPS/$s")" = "$k" ] || return 1
    for f; do [ -e "$f" ] || return 1; done
}
stamp() { echo "$2" > "$STAMPS/$1"; }
timing() { echo "$(date -Is) $*" >> "$LOGS/timings.txt"; log "$*"; }

# --- dom0 root filesystem ---------------------------------------------------------------
stage_rootfs() {
    local R=$W/dom0root KVER
    rm -rf "$R" "$W/domu-mods" "$W/debs" "$W/x"
    mkdir -p "$BOOT" "$W/debs" "$W/x"
    nice -n "$NICE" debootstrap --variant=minbase --include="$DOM0_PKGS" "$SUITE" "$R" "$MIRROR" \
        >"$LOGS/debootstrap.log" 2>&1 || { tail -20 "$LOGS/debootstrap.log" >&2; return 1; }
    # debootstrap only uses the release pocket: upgrade from -updates and -security
    cat > "$R/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    {
        chroot "$R" apt-get update
        DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get -y upgrade
    } >>"$LOGS/debootstrap.log" 2>&1
    # the hypervisor and the kernel from the same apt state as xen-utils, so that the
    # versions match (the host's own apt lists may be older)
    local kpkg; kpkg=$(chroot "$R" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    mkdir -p "$R/tmp/debs"
    chroot "$R" sh -c "cd /tmp/debs && apt-get download $XEN_PKG $kpkg" >>"$LOGS/debootstrap.log" 2>&1
    mv "$R"/tmp/debs/*.deb "$W/debs/"; rmdir "$R/tmp/debs"
    local d; for d in "$W"/debs/*.deb; do dpkg -x "$d" "$W/x"; done
    KVER=$(ls "$W/x/lib/modules"); echo "$KVER" > "$BOOT/KVER"
    zcat "$W"/x/boot/xen-4.17-amd64.gz > "$BOOT/xen"      # QEMU's multiboot loader needs the ELF
    cp "$W/x/boot/vmlinuz-$KVER" "$BOOT/vmlinuz"
    {
        echo "xen-hypervisor $(dpkg-deb -f "$W"/debs/"$XEN_PKG"_*.deb Version)"
        echo "xen-utils $(chroot "$R" dpkg-query -W -f '${Version}' xen-utils-4.17)"
        echo "kernel $kpkg $(dpkg-deb -f "$W"/debs/"$kpkg"_*.deb Version)"
        echo "iperf3 $(chroot "$R" dpkg-query -W -f '${Version}' iperf3)"
    } > "$BOOT/versions.txt"
    chroot "$R" apt-get clean
    rm -rf "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* "$R"/usr/share/man/* \
           "$R"/usr/share/locale/* "$R"/usr/share/info/* "$R"/var/cache/debconf/*-old
    # kernel modules: resolve dependencies in the full tree (hard links, no copy), then
    # keep only what dom0 needs; the domU's modules go to $W/domu-mods in load order
    local M=/lib/modules/$KVER m f
    mkdir -p "$R/lib/modules"
    cp -al "$W/x$M" "$R$M"
    chroot "$R" depmod -a "$KVER"
    deps() { # deps <module>: the .ko files to insmod, in load order
        chroot "$R" modprobe -S "$KVER" --show-depends "$1" | awk '$1 == "insmod" { print $2 }'
    }
    mkdir -p "$W/domu-mods"
    for m in $DOMU_MODS; do deps "$m"; done | awk '!seen[$0]++' | while read -r f; do
        cp "$R$f" "$W/domu-mods/"; basename "$f" >> "$W/domu-mods/order"
    done
    local keep; keep=$(for m in $DOM0_MODS; do deps "$m"; done | sort -u)
    mv "$R$M" "$R$M.full"; mkdir -p "$R$M"
    cp -a "$R$M.full"/modules.order "$R$M.full"/modules.builtin* "$R$M/"
    for f in $keep; do mkdir -p "$R$(dirname "$f")"; cp "$R$M.full${f#"$M"}" "$R$f"; done
    rm -rf "$R$M.full"
    chroot "$R" depmod -a "$KVER"
    echo dom0 > "$R/etc/hostname"
    printf '127.0.0.1 localhost\n10.99.0.1 dom0\n10.99.0.2 domU\n10.99.0.3 nbtest\n' > "$R/etc/hosts"
    rm -rf "$W/x"
    log "dom0 rootfs: $(du -sh "$R" | cut -f1), $(echo "$keep" | wc -l) modules; $(tr '\n' ';' < "$BOOT/versions.txt")"
}

# --- dom0 image: rootfs + our /init, as an uncompressed cpio (no decompression under TCG)
stage_dom0img() {
    local R=$W/dom0root
    install -m 755 "$LAB_DIR/dom0/init" "$R/init"
    mkdir -p "$R/mnt/host"
    (cd "$R" && find . -xdev | cpio -H newc -o --quiet) > "$BOOT/dom0.cpio.tmp"
    mv "$BOOT/dom0.cpio.tmp" "$BOOT/dom0.cpio"
}

# --- domU initramfs: static busybox, iperf3 + libs, netfront-test + libs, modules -------
copy_libs() { # copy_libs <dest root> <source root> < ldd output: the libraries, from <source root>
    local lib
    for lib in $(awk '/=>/ { print $3 } /ld-linux/ { print $1 }'); do
        mkdir -p "$1$(dirname "$lib")"; cp -L "$2$lib" "$1$lib"
    done
}
stage_domu() { # $1 = netfront-test binary
    local R=$W/dom0root D=$W/domuinit
    rm -rf "$D"; mkdir -p "$D"/{bin,dev,proc,sys,tmp,run,modules,lib64,lib/x86_64-linux-gnu}
    cp "$R/bin/busybox" "$D/bin/busybox"
    local a; for a in $("$D/bin/busybox" --list); do [ -e "$D/bin/$a" ] || ln -s busybox "$D/bin/$a"; done
    cp -L "$R/usr/bin/iperf3" "$D/bin/iperf3"
    chroot "$R" ldd /usr/bin/iperf3 | copy_libs "$D" "$R"
    strip -o "$D/bin/netfront-test" "$1" 2>/dev/null || cp "$1" "$D/bin/netfront-test"
    # a host binary (Debian 12 glibc 2.36, like the guest); missing libraries from the host
    ldd "$1" | while read -r l; do
        case $l in *"=> /"*) p=${l#*=> }; p=${p%% *}; [ -e "$D$p" ] || { mkdir -p "$D$(dirname "$p")"; cp -L "$p" "$D$p"; } ;; esac
    done
    cp "$W"/domu-mods/* "$D/modules/"
    install -m 755 "$LAB_DIR/domu/init" "$D/init"
    mkdir -p "$SHARE/guest"
    (cd "$D" && find . | cpio -H newc -o --quiet | gzip -6) > "$SHARE/guest/domU.cpio.gz"
}

# --- everything together ----------------------------------------------------------------
do_build() {
    mkdir -p "$W" "$BOOT" "$LOGS" "$STAMPS" "$SHARE"
    case "$W" in *[,\ ]*) die "LAB_WORK must not contain commas or spaces (QEMU -initrd syntax)";; esac
    local t0 t reason; t0=$(now)
    if ! reason=$(host_deps); then
        if [ "${MODE:-build}" = check ]; then
            echo "########################################################################"
            echo "SKIPPED: lab check: QEMU cannot be installed: $reason"
            echo "########################################################################"
            exit 0
        fi
        die "$reason"
    fi
    # cargo in the background while the images are built (cargo is CPU, debootstrap is I/O)
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    t=$(now)
    ( cd "$REPO" && nice -n "$NICE" cargo build --release --locked -p netback -p netfront-test -p dom0-tools ) \
        >"$LOGS/cargo.log" 2>&1 &
    local cargo_pid=$!

    local k_rootfs k_img k_domu
    k_rootfs=$(key_of stage_rootfs "$XEN_PKG" "$MIRROR" "$SECURITY_MIRROR" "$DOM0_PKGS" "$DOM0_MODS" "$DOMU_MODS")
    if ! fresh rootfs "$k_rootfs" "$W/dom0root/usr/sbin/xl" "$W/domu-mods/order" "$BOOT/xen" "$BOOT/vmlinuz"; then
        log "building the dom0 rootfs (debootstrap, about 1 min)"; t=$(now); stage_rootfs; stamp rootfs "$k_rootfs"
        timing "build: rootfs $(since "$t") s"
    fi
    k_img=$(key_of stage_dom0img "$k_rootfs" "$(hash_files "$LAB_DIR/dom0/init")")
    if ! fresh dom0img "$k_img" "$BOOT/dom0.cpio"; then
        t=$(now); stage_dom0img; stamp dom0img "$k_img"
        timing "build: dom0 image $(du -m "$BOOT/dom0.cpio" | cut -f1) MB, $(since "$t") s"
    fi
    t=$(now)
    if ! wait "$cargo_pid"; then tail -30 "$LOGS/cargo.log" >&2; die "cargo build failed (log: $LOGS/cargo.log)"; fi
    timing "build: cargo (waited $(since "$t") s after the images)"
    local nft=$target/release/netfront-test nb=${NETBACK_BIN:-$target/release/netback}
    k_domu=$(key_of stage_domu "$k_rootfs" "$(hash_files "$LAB_DIR/domu/init" "$nft")")
    if ! fresh domu "$k_domu" "$SHARE/guest/domU.cpio.gz"; then
        t=$(now); stage_domu "$nft"; stamp domu "$k_domu"
        timing "build: domU initramfs $(du -k "$SHARE/guest/domU.cpio.gz" | cut -f1) KB, $(since "$t") s"
    fi
    # the share: daemon, netfront-test, guest kernel, dom0 scripts (read at every boot)
    mkdir -p "$SHARE/lab" "$SHARE/guest"
    cp "$nb" "$SHARE/netback.new" && mv "$SHARE/netback.new" "$SHARE/netback"
    cp "$nft" "$SHARE/netfront-test.new" && mv "$SHARE/netfront-test.new" "$SHARE/netfront-test"
    cp "$target/release/nbctl" "$SHARE/nbctl.new" && mv "$SHARE/nbctl.new" "$SHARE/nbctl"
    cp "$BOOT/vmlinuz" "$SHARE/guest/vmlinuz"
    cp "$BOOT/versions.txt" "$SHARE/lab/versions.txt"
    cp "$LAB_DIR"/dom0/*.sh "$SHARE/lab/"
    chmod +x "$SHARE"/lab/*.sh
    git -C "$REPO" rev-parse --short HEAD > "$SHARE/lab/git-rev" 2>/dev/null || echo unknown > "$SHARE/lab/git-rev"
    timing "build: done in $(since "$t0") s"
}

# ========================================================================================
# boot
# ========================================================================================
qemu_argv() { # qemu_argv <dom0 cmdline extra>: sets the array QEMU
    local xen="console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all console_timestamps=boot"
    xen+=" dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$SMP smap=hvm bootscrub=0 $XEN_EXTRA"
    QEMU=(qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$SMP" -nographic -nic none -no-reboot
          -virtfs "local,path=$SHARE,mount_tag=hostshare,security_model=none,id=hostshare"
          -kernel "$BOOT/xen" -append "$xen"
          -initrd "$BOOT/vmlinuz console=hvc0 earlyprintk=xen $1,$BOOT/dom0.cpio")
}

write_config() { # the settings dom0's main.sh reads from the share
    cat > "$SHARE/lab/config.sh" <<EOF
MODE=$MODE
RUNS=$RUNS
IPERF_SECS=$IPERF_SECS
UDP_SECS=$UDP_SECS
PING_COUNT=$PING_COUNT
FLOOD_COUNT=$FLOOD_COUNT
PING_WAIT=$PING_WAIT
NBTEST=$NBTEST
PROFILE=$PROFILE
SOAK_CYCLES=$SOAK_CYCLES
RESTART=$RESTART
NBCTL_SET='$NBCTL_SET'
NBTEST_ARGS='$NBTEST_ARGS'
NBTEST_TIMEOUT=$NBTEST_TIMEOUT
HOSTILE=$HOSTILE
HOSTILE_WAIT=$HOSTILE_WAIT
NETBACK_ARGS='$NETBACK_ARGS'
NETBACK_LOG='$NETBACK_LOG'
EOF
    cat > "$SHARE/lab/config.json" <<EOF
{"mode": "$MODE", "runs": $RUNS, "iperf_secs": $IPERF_SECS, "udp_secs": $UDP_SECS,
 "ping_count": $PING_COUNT, "flood_count": $FLOOD_COUNT, "nbtest": "$NBTEST",
 "nbtest_fatal": "$NBTEST_FATAL", "hostile": "$HOSTILE", "hostile_fatal": "$HOSTILE_FATAL",
 "netback_args": "$NETBACK_ARGS", "nbctl_set": "$NBCTL_SET", "soak_cycles": $SOAK_CYCLES, "restart": "$RESTART",
 "netback_bin": "${NETBACK_BIN:-target/release/netback}",
 "git_rev": "$(cat "$SHARE/lab/git-rev")", "mem": "$MEM", "smp": $SMP,
 "versions": "$(tr '\n' ';' < "$SHARE/lab/versions.txt")",
 "date": "$(date -Is)", "host_load": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF
}

do_boot() { # unattended boot in MODE (run|check); fills $RESULTS; returns table.py's status
    write_config
    rm -rf "$SHARE/results"; mkdir -p "$SHARE/results"
    local stamp; stamp=$(date +%Y%m%d-%H%M%S)
    local serial=$LOGS/serial-$stamp-$MODE.log
    qemu_argv "lab=$MODE"
    log "booting ($MODE, RUNS=$RUNS IPERF_SECS=$IPERF_SECS, timeout ${TIMEOUT}s); serial log: $serial"
    local t0 rc=0; t0=$(now)
    nice -n "$NICE" timeout "$TIMEOUT" "${QEMU[@]}" </dev/null >"$serial" 2>&1 &
    local tpid=$! qpid=
    trap 'kill $tpid 2>/dev/null' EXIT
    # progress (dom0 prints lines starting with LAB; the host adds its elapsed time) and,
    # at every LAB-T mark, the host's CPU use: all busy jiffies and QEMU's, so table.py
    # can say how much CPU other processes took during each phase (noise indicator)
    echo -e "elapsed_s\tmark\thost_busy_jiffies\tqemu_jiffies" > "$LOGS/host-cpu.tsv"
    tail -n +1 -F --pid="$tpid" "$serial" 2>/dev/null | while IFS= read -r line; do
        line=${line%$'\r'}
        case $line in
            LAB*) printf '[%6.1fs] %s\n' "$(since "$t0")" "$line" >&2 ;;
            *'Xen version'*) printf '[%6.1fs] Xen: %s\n' "$(since "$t0")" "${line##*\) }" >&2 ;;
        esac
        case $line in
            LAB-T*|*'Xen version'*)
                [ -n "$qpid" ] || qpid=$(pgrep -P "$tpid" qemu-system 2>/dev/null | head -n 1 || true)
                mark=xen-start; case $line in LAB-T*) mark=$(echo "$line" | cut -d' ' -f2) ;; esac
                printf '%s\t%s\t%s\t%s\n' "$(since "$t0")" "$mark" \
                    "$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)" \
                    "$(awk '{ print $14 + $15 }' "/proc/$qpid/stat" 2>/dev/null || echo 0)" >> "$LOGS/host-cpu.tsv" ;;
        esac
    done
    wait "$tpid" || rc=$?
    trap - EXIT
    timing "$MODE: QEMU exited with $rc after $(since "$t0") s"
    ln -sf "$serial" "$LOGS/serial-latest.log"
    rm -rf "$RESULTS"; mkdir -p "$RESULTS"
    cp -a "$SHARE/results/." "$RESULTS/"
    cp "$SHARE/lab/config.json" "$RESULTS/config.json"
    cp "$LOGS/host-cpu.tsv" "$RESULTS/host-cpu.tsv"
    tr -d '\r' < "$serial" > "$RESULTS/serial.log"
    grep -a '^LAB-T' "$RESULTS/serial.log" > "$RESULTS/dom0-timeline.txt" || true
    echo "qemu_exit=$rc wall_s=$(since "$t0")" > "$RESULTS/qemu.txt"
    [ "$rc" = 124 ] && log "QEMU killed after TIMEOUT=${TIMEOUT}s"
    local st=0
    python3 "$LAB_DIR/table.py" "$RESULTS" || st=$?
    mkdir -p "$W/runs"; cp -a "$RESULTS" "$W/runs/$stamp-$MODE"
    log "results: $RESULTS (table.md, summary.json, per-phase raw files; a copy in $W/runs/$stamp-$MODE)"
    return $st
}

# ========================================================================================
MODE=${1:-}
case "$MODE" in
    build|run|check|shell) ;;
    clean) rm -rf "$W"; exit 0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
if [ "$MODE" = check ]; then
    RUNS=${RUNS:-1} IPERF_SECS=${IPERF_SECS:-2} UDP_SECS=${UDP_SECS:-2}
    PING_COUNT=${PING_COUNT:-20} FLOOD_COUNT=${FLOOD_COUNT:-200} TIMEOUT=${TIMEOUT:-900}
else
    RUNS=${RUNS:-3} IPERF_SECS=${IPERF_SECS:-10} UDP_SECS=${UDP_SECS:-5}
    PING_COUNT=${PING_COUNT:-200} FLOOD_COUNT=${FLOOD_COUNT:-1000} TIMEOUT=${TIMEOUT:-1200}
fi
# s after xl create for the first ping: a domU's first answer took 13-45 s under TCG on a
# shared host, with either backend, so 45 s failed runs that only lacked patience.
PING_WAIT=${PING_WAIT:-90}
NBTEST=${NBTEST:-1}                     # 1: run netfront-test in a second domU against each backend
NBTEST_FATAL=${NBTEST_FATAL:-1}         # 1: a failed netfront-test phase fails run/check
PROFILE=${PROFILE:-$([ "$MODE" = run ] && echo 1 || echo 0)}  # 1: strace -c the daemon per workload (ours)
NBTEST_ARGS=${NBTEST_ARGS:---ip 10.99.0.3 --ping 10.99.0.2 --count 5}
NBTEST_TIMEOUT=${NBTEST_TIMEOUT:-90}
HOSTILE=${HOSTILE:-1}                   # 1: hostile netfront-test modes against ours (nbtest domU)
HOSTILE_FATAL=${HOSTILE_FATAL:-1}       # 1: a failed hostile-<mode> check fails run/check
HOSTILE_WAIT=${HOSTILE_WAIT:-20}        # s the hostile frontend waits for the vif to be disabled
NETBACK_ARGS=${NETBACK_ARGS:---control /run/netback.sock}
NETBACK_LOG=${NETBACK_LOG:-info}
SOAK_CYCLES=${SOAK_CYCLES:-10}          # detach/attach cycles of domU's vif after the contract checks (0: none)
RESTART=${RESTART:-1}                   # 1: kill -9 the daemon during a ping and start it again (hitless restart)
NBCTL_SET=${NBCTL_SET:-}                # knobs set through nbctl once the daemon runs, e.g. --tx-map-min 4096
case "$NBTEST_ARGS$NETBACK_ARGS$NBCTL_SET" in *[\',]*) die "NBTEST_ARGS/NETBACK_ARGS must not contain quotes or commas";; esac

mkdir -p "$W" "$LOGS"
exec 9>"$W/lock"
flock -n 9 || { log "waiting for another lab run holding $W/lock"; flock 9; }

[ "${NOBUILD:-0}" = 1 ] && [ "$MODE" != build ] || do_build
case "$MODE" in
    build) ;;
    run|check) do_boot || exit $? ;;
    shell)
        qemu_argv "lab=shell"
        log "interactive dom0: Ctrl-a x quits QEMU, Ctrl-a c toggles the monitor"
        write_config
        nice -n "$NICE" "${QEMU[@]}" ;;
esac
