# dom0 helpers (sourced by main.sh): checks, domU life cycle, measurements, diagnostics.
# Raw outputs go to $R/<phase>/ on the host share; lab/table.py parses them on the host.

T() { echo "LAB-T $* $(cut -d' ' -f1 /proc/uptime)"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# check <phase> <name> <pass|fail|warn|skip|info> <detail...>: one line of checks.tsv;
# returns 1 for fail
check() {
    local ph=$1 name=$2 st=$3; shift 3
    printf '%s\t%s\t%s\t%s\n' "$ph" "$name" "$st" "$*" >> "$R/checks.tsv"
    echo "LAB-CHECK $ph $name $st $*"
    [ "$st" != fail ]
}
# metric <phase> <name> <run> <value>: a number measured in dom0 (timings)
metric() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$R/metrics.tsv"; }

# domu_cfg <name> <mac> <memory MB> <extra kernel args>: an xl config on stdout
domu_cfg() {
    cat <<EOF
name    = "$1"
type    = "pv"
kernel  = "/tmp/guest/vmlinuz"
ramdisk = "/tmp/guest/domU.cpio.gz"
extra   = "console=hvc0 rdinit=/init $4"
memory  = $3
vcpus   = 1
vif     = [ 'mac=$2,bridge=xenbr0' ]
on_crash = "destroy"
EOF
}

# wait_ping <ip> <seconds>: 0 as soon as <ip> answers one ping
wait_ping() {
    local end=$(( $(date +%s) + $2 ))
    while [ "$(date +%s)" -lt $end ]; do
        ping -c1 -W1 "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# wait_gone <xenstore path> <seconds>: 0 once the path no longer exists
wait_gone() {
    local end=$(( $(date +%s) + $2 ))
    while xenstore-exists "$1" 2>/dev/null; do
        [ "$(date +%s)" -ge $end ] && return 1
        sleep 0.2
    done
}

# link_check <phase> <tag> <vif>: the vif exists, is up and is a port of xenbr0
link_check() {
    local P=$1 tag=$2 vif=$3 i master flags kind
    for i in $(seq 1 50); do [ -e "/sys/class/net/$vif" ] && break; sleep 0.2; done
    if [ ! -e "/sys/class/net/$vif" ]; then
        check "$P" "link$tag" fail "no $vif in dom0 ($(ls /sys/class/net | tr '\n' ' '))"; return 1
    fi
    for i in $(seq 1 25); do
        master=$(basename "$(readlink "/sys/class/net/$vif/master" 2>/dev/null)" 2>/dev/null)
        [ "$master" = xenbr0 ] && break; sleep 0.2
    done
    flags=$(ip -o link show "$vif" | sed -n 's/.*<\([^>]*\)>.*/\1/p')
    if [ -e "/sys/class/net/$vif/tun_flags" ]; then kind=tap
    else kind="driver=$(basename "$(readlink "/sys/class/net/$vif/device/driver" 2>/dev/null)" 2>/dev/null)"; fi
    case ",$flags," in *,UP,*) ;; *) check "$P" "link$tag" fail "$vif not UP <$flags> master=$master $kind"; return 1 ;; esac
    [ "$master" = xenbr0 ] || { check "$P" "link$tag" fail "$vif <$flags> not on xenbr0 (master=$master) $kind"; return 1; }
    check "$P" "link$tag" pass "$vif <$flags> on xenbr0, $kind, mtu $(cat "/sys/class/net/$vif/mtu")"
}

# create_and_ping <phase> <tag> <cfg> <name> <ip>: xl create, link, first ping
create_and_ping() {
    local P=$1 tag=$2 cfg=$3 name=$4 ip=$5 t0 rc domid
    T "$P-create$tag"
    t0=$(now)
    timeout 120 xl create "$cfg" > "$R/$P/xl-create$tag.txt" 2>&1; rc=$?
    metric "$P" xl_create_s "$tag" "$(since "$t0")"
    if [ $rc != 0 ]; then
        check "$P" "create$tag" fail "xl create rc=$rc: $(grep -v '^Parsing' "$R/$P/xl-create$tag.txt" | head -n 2 | tr '\n' ' ')"
        timeout 60 xl destroy "$name" >/dev/null 2>&1
        return 1
    fi
    domid=$(xl domid "$name")
    check "$P" "create$tag" pass "domid $domid in $(since "$t0") s"
    link_check "$P" "$tag" "vif$domid.0" || return 1
    if wait_ping "$ip" "$PING_WAIT"; then
        metric "$P" create_to_ping_s "$tag" "$(since "$t0")"
        check "$P" "ping$tag" pass "$ip answers $(since "$t0") s after xl create"
    else
        check "$P" "ping$tag" fail "$ip silent for ${PING_WAIT} s after xl create returned"
        return 1
    fi
}

# destroy_clean <phase> <tag> <name>: xl destroy returns 0, the backend dir and the vif go
destroy_clean() {
    local P=$1 tag=$2 name=$3 domid t0 rc gone
    domid=$(xl domid "$name" 2>/dev/null) || { check "$P" "destroy$tag" skip "no domain $name"; return 0; }
    t0=$(now)
    timeout 90 xl destroy "$name" > "$R/$P/xl-destroy$tag.txt" 2>&1; rc=$?
    metric "$P" xl_destroy_s "$tag" "$(since "$t0")"
    wait_gone "/local/domain/0/backend/vif/$domid" 10 && gone=yes || gone=no
    if [ $rc = 0 ] && [ $gone = yes ] && ! xl domid "$name" >/dev/null 2>&1; then
        check "$P" "destroy$tag" pass "rc=0 in $(since "$t0") s, backend/vif/$domid gone"
    else
        check "$P" "destroy$tag" fail "xl destroy rc=$rc, backend/vif/$domid gone=$gone: $(tail -2 "$R/$P/xl-destroy$tag.txt" | tr '\n' ' ')"
    fi
    local i; for i in $(seq 1 25); do [ -e "/sys/class/net/vif$domid.0" ] || break; sleep 0.2; done
    [ -e "/sys/class/net/vif$domid.0" ] && check "$P" "vif-gone$tag" warn "vif$domid.0 still exists 5 s after xl destroy"
    [ $rc = 0 ] && [ $gone = yes ]
}

# measure <phase> <ip>: RUNS x (ping 10 ms, ping flood, TCP both ways, UDP 64 B both ways)
measure() {
    local P=$1 ip=$2 D=$R/$1 k rc fails=0 pfail=0 n
    for k in $(seq 1 "$RUNS"); do
        T "$P-measure-run$k"
        ping -c "$PING_COUNT" -i 0.01 -W 2 "$ip" > "$D/run$k-ping.txt" 2>&1
        ping -f -c "$FLOOD_COUNT" -w 60 "$ip" > "$D/run$k-flood.txt" 2>&1
        n=$(grep -c 'bytes from' "$D/run$k-ping.txt")
        [ "$n" -gt 0 ] || pfail=$((pfail + 1))
        for t in "tcp-dom0-to-domU:" "tcp-domU-to-dom0:-R" "udp64-dom0-to-domU:-u -l 64 -b 0" "udp64-domU-to-dom0:-u -l 64 -b 0 -R"; do
            local label=${t%%:*} opts=${t#*:} secs=$IPERF_SECS
            case $label in udp*) secs=$UDP_SECS ;; esac
            # dom0's TCP/IP counters around each run (retransmits, out-of-order, checksum errors)
            cat /proc/net/snmp /proc/net/netstat > "$D/run$k-$label.nstat-before" 2>/dev/null
            # shellcheck disable=SC2086
            timeout $((secs + 30)) iperf3 -c "$ip" -t "$secs" -J $opts > "$D/run$k-$label.json" 2>"$D/run$k-$label.err"
            rc=$?
            cat /proc/net/snmp /proc/net/netstat > "$D/run$k-$label.nstat-after" 2>/dev/null
            [ $rc = 0 ] || { fails=$((fails + 1)); echo "LAB-INFO $P run$k $label: iperf3 rc=$rc $(grep -o '"error":.*' "$D/run$k-$label.json")"; }
            sleep 1
        done
    done
    [ $pfail = 0 ] && check "$P" ping-runs pass "$RUNS x $PING_COUNT pings at 10 ms" \
                   || check "$P" ping-runs fail "$pfail of $RUNS ping runs got no answer"
    [ $fails = 0 ] && check "$P" iperf pass "$((RUNS * 4)) iperf3 runs" \
                   || check "$P" iperf fail "$fails of $((RUNS * 4)) iperf3 runs failed"
}

# snapshot <phase> <label>: xenstore and link state, for comparing kernel and ours
snapshot() {
    local D=$R/$1 d
    {
        echo "== xenstore backend/vif"; xenstore-ls -f /local/domain/0/backend/vif 2>&1
        for d in $(xenstore-list /local/domain 2>/dev/null); do
            [ "$d" = 0 ] || { echo "== frontend of domain $d"; xenstore-ls -f "/local/domain/$d/device/vif" 2>&1; }
        done
        echo "== ip -s -d link"; ip -s -d link
        echo "== bridge link"; bridge link
    } > "$D/snapshot-$2.txt" 2>&1
}

# diag <phase> <label>: everything useful when something failed
diag() {
    local D=$R/$1 f
    {
        echo "== diag $1 $2 at uptime $(cut -d' ' -f1 /proc/uptime)"
        if [ -n "${NBPID:-}" ]; then
            echo "== daemon pid $NBPID: $(kill -0 "$NBPID" 2>/dev/null && echo alive || echo gone)"
            ps -o pid,stat,etime,rss,args -p "$NBPID" 2>/dev/null
            echo "== daemon log (tail)"; tail -n 60 "$D/netback.log" 2>/dev/null
        fi
        echo "== xenstore-ls -f /local/domain/0/backend/vif"; xenstore-ls -f /local/domain/0/backend/vif 2>&1
        for f in $(xenstore-list /local/domain 2>/dev/null); do
            [ "$f" = 0 ] || { echo "== xenstore-ls -f /local/domain/$f/device/vif"; xenstore-ls -f "/local/domain/$f/device/vif" 2>&1; }
        done
        echo "== xl list"; xl list 2>&1
        echo "== xl dmesg | tail -40"; xl dmesg 2>&1 | tail -n 40
        echo "== ip -d link"; ip -d link
        echo "== ip addr"; ip addr
        echo "== brctl show"; brctl show
        echo "== bridge fdb (xenbr0)"; bridge fdb show br xenbr0
        echo "== lsmod | grep xen"; lsmod | grep -E 'xen|tun|bridge'
        echo "== ls -l /dev/xen"; ls -l /dev/xen
        echo "== dmesg | tail -60"; dmesg | tail -n 60
        for f in /var/log/xen/*.log /var/log/xen/console/*.log; do
            [ -f "$f" ] && { echo "== $f (tail)"; tail -n 40 "$f"; }
        done
    } > "$D/diag-$2.txt" 2>&1
    echo "LAB-INFO diagnostics: results/$1/diag-$2.txt"
}

# nbtest_run <phase> <label> <args>: a second domU "nbtest" whose init runs
# netfront-test --xen <args> instead of xen-netfront. Waits up to NBTEST_TIMEOUT for
# NBTEST-DONE on its console, keeps the console, waits up to 10 s for the domU to power
# itself off (else xl destroy) and up to 10 s for its backend directory to go. Files:
# $R/<phase>/<f>-console.log and xl-create-<f>.txt, <f> = nbtest for the label
# netfront-test, the label otherwise. Sets NBT_RC (netfront-test's exit status, empty
# without NBTEST-DONE), NBT_LOG, NBT_SECS (create to done), NBT_DOMID, NBT_CLEAN (yes when
# the domain and backend/vif/<domid> are gone) and NBT_DESTROY (what destroy did).
# Returns 1 if xl create failed.
nbtest_run() {
    local P=$1 label=$2 args=$3 f=nbtest cfg=/tmp/nbtest.cfg log=/var/log/xen/console/guest-nbtest.log end t0 rc
    [ "$label" = netfront-test ] || f=$label
    NBT_RC= NBT_LOG=$R/$P/$f-console.log NBT_SECS= NBT_DOMID= NBT_CLEAN=no NBT_DESTROY=
    T "$P-$f"
    domu_cfg nbtest "$NBT_MAC" 256 "nbtest=$(echo "$args" | tr ' ' ',')" > "$cfg"
    rm -f "$log"
    t0=$(now)
    if ! timeout 120 xl create "$cfg" > "$R/$P/xl-create-$f.txt" 2>&1; then
        timeout 60 xl destroy nbtest >/dev/null 2>&1; return 1
    fi
    NBT_DOMID=$(xl domid nbtest 2>/dev/null)
    T "$P-$f-created"
    end=$(( $(date +%s) + NBTEST_TIMEOUT ))
    while [ "$(date +%s)" -lt $end ]; do
        grep -q 'NBTEST-DONE' "$log" 2>/dev/null && break
        xl domid nbtest >/dev/null 2>&1 || break
        sleep 1
    done
    NBT_SECS=$(since "$t0")
    T "$P-$f-finished"
    cp "$log" "$NBT_LOG" 2>/dev/null
    # it powers itself off after NBTEST-DONE, and xl's own process destroys it then; an
    # xl destroy racing with that fails (rc 1, "unable to find domain info"), so give it 10 s
    if grep -q 'NBTEST-DONE' "$NBT_LOG" 2>/dev/null; then
        for _ in $(seq 1 50); do xl domid nbtest >/dev/null 2>&1 || break; sleep 0.2; done
    fi
    if xl domid nbtest >/dev/null 2>&1; then
        timeout 60 xl destroy nbtest > "$R/$P/xl-destroy-$f.txt" 2>&1; rc=$?
        NBT_DESTROY="xl destroy rc=$rc"
    else
        rc=0; NBT_DESTROY="powered off"
    fi
    T "$P-$f-destroyed"
    if [ -n "$NBT_DOMID" ] && wait_gone "/local/domain/0/backend/vif/$NBT_DOMID" 10 \
       && ! xl domid nbtest >/dev/null 2>&1 && [ $rc = 0 ]; then
        NBT_CLEAN=yes; NBT_DESTROY="$NBT_DESTROY, backend/vif/$NBT_DOMID gone"
    else
        NBT_DESTROY="$NBT_DESTROY, backend/vif/${NBT_DOMID:-?} $(xenstore-exists "/local/domain/0/backend/vif/$NBT_DOMID" 2>/dev/null \
            && echo "still there (state $(xenstore-read "/local/domain/0/backend/vif/$NBT_DOMID/0/state" 2>/dev/null))" || echo gone)"
    fi
    NBT_RC=$(sed -n 's/.*NBTEST-DONE rc=\([0-9]*\).*/\1/p' "$NBT_LOG" 2>/dev/null | tail -1)
}

# nbtest <phase>: netfront-test --xen $NBTEST_ARGS in the nbtest domU; check netfront-test
nbtest() {
    local P=$1
    if ! nbtest_run "$P" netfront-test "$NBTEST_ARGS"; then
        check "$P" netfront-test fail "xl create of the nbtest domU failed"
        return 1
    fi
    if [ "$NBT_RC" = 0 ]; then
        check "$P" netfront-test pass "netfront-test --xen $NBTEST_ARGS: rc=0 in $NBT_SECS s"
    else
        check "$P" netfront-test fail "netfront-test --xen $NBTEST_ARGS: rc=${NBT_RC:-none (no NBTEST-DONE within ${NBTEST_TIMEOUT} s)}"
        diag "$P" nbtest
        return 1
    fi
}

# tap_packets <vif>: frames through the TAP so far, both ways
tap_packets() {
    echo $(( $(cat "/sys/class/net/$1/statistics/rx_packets") + $(cat "/sys/class/net/$1/statistics/tx_packets") ))
}
# ctx_switches <pid>: voluntary + involuntary context switches of all its threads
ctx_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'
}

# profile <ip> <vif>: the daemon's cost per frame, per workload, in two passes: plain (the
# TAP's frames, the daemon's context switches, `nbctl stats` before/after), then under
# `strace -c -f` (syscalls per frame; strace stops the daemon at every syscall, so that
# pass's rates and context switches mean nothing). One line per workload in
# ours/profile.tsv; strace's summary in ours/profile-<workload>-strace.txt.
profile() {
    local ip=$1 vif=$2 D=$R/ours w p0 p1 c0 c1 sp calls frames ctx
    [ -n "$NBPID" ] || return 0
    command -v strace >/dev/null || { check ours profile skip "no strace in dom0"; return 0; }
    printf 'workload\tframes\tctx_switches\tstrace_frames\tsyscalls\n' > "$D/profile.tsv"
    for w in "ping:ping -c 100 -i 0.01 -W 2 $ip" \
             "tcp-dom0-to-domU:iperf3 -c $ip -t 3" \
             "tcp-domU-to-dom0:iperf3 -c $ip -t 3 -R" \
             "udp64-domU-to-dom0:iperf3 -c $ip -t 3 -u -l 64 -b 0 -R"; do
        local label=${w%%:*} cmd=${w#*:}
        /mnt/host/nbctl --control "$NBCTL_SOCK" stats > "$D/profile-$label-stats-before.txt" 2>&1
        p0=$(tap_packets "$vif"); c0=$(ctx_switches "$NBPID")
        # shellcheck disable=SC2086
        timeout 40 $cmd > "$D/profile-$label-out.txt" 2>&1
        p1=$(tap_packets "$vif"); c1=$(ctx_switches "$NBPID")
        /mnt/host/nbctl --control "$NBCTL_SOCK" stats > "$D/profile-$label-stats-after.txt" 2>&1
        frames=$((p1 - p0)) ctx=$((c1 - c0))
        sleep 1
        strace -c -f -qq -o "$D/profile-$label-strace.txt" -p "$NBPID" &
        sp=$!
        sleep 1
        p0=$(tap_packets "$vif")
        # shellcheck disable=SC2086
        timeout 40 $cmd > "$D/profile-$label-strace-out.txt" 2>&1
        p1=$(tap_packets "$vif")
        kill -INT "$sp"; wait "$sp" 2>/dev/null
        calls=$(awk '$NF == "total" { print $4 }' "$D/profile-$label-strace.txt")
        printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$frames" "$ctx" "$((p1 - p0))" "${calls:-0}" >> "$D/profile.tsv"
        echo "LAB-PROFILE $label frames=$frames ctx_switches=$ctx strace_frames=$((p1 - p0)) syscalls=${calls:-?}"
        sleep 1
    done
    check ours profile info "the daemon's syscalls and context switches per frame: ours/profile.tsv"
}
