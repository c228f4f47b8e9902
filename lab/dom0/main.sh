#!/bin/bash
# dom0 test driver (from the share, run by /init): main.sh run|check|shell
#   phase kernel: xen-netback + domU xen-netfront, measurements
#   phase ours:   rmmod xen-netback, /mnt/host/netback --xen, same domU, measurements,
#                 netfront-test, the hostile frontends (HOSTILE=1), then the toolstack
#                 contract (detach, attach, destroy, create again, destroy, daemon alive,
#                 SIGTERM -> exit 0)
# Results: /mnt/host/results (checks.tsv, metrics.tsv, <phase>/...), read by lab/table.py.
set -u
MODE=${1:-run}
L=/mnt/host/lab
R=/mnt/host/results
# shellcheck source=/dev/null
. "$L/config.sh"
# shellcheck source=measure.sh
. "$L/measure.sh"
: "${HOSTILE:=0}" "${HOSTILE_WAIT:=20}"   # absent from a config.sh written by an older xenlab.sh
DOMU_IP=10.99.0.2 DOMU_MAC=00:16:3e:99:00:02
NBT_MAC=00:16:3e:99:00:03
NBPID=
mkdir -p "$R"

if ! "$L/setup.sh"; then
    echo "LAB-FATAL dom0 setup failed"
    check lab setup fail "dom0 setup (modules, xenstored, xenconsoled, bridge) failed"
    [ "$MODE" = shell ] || exit 1
fi
domu_cfg domU "$DOMU_MAC" 512 "labip=$DOMU_IP/24" > /tmp/domU.cfg

if [ "$MODE" = shell ]; then
    cat <<EOF
LAB: interactive dom0.  The domU config is /tmp/domU.cfg (xl create /tmp/domU.cfg;
LAB: its console: xl console domU, Ctrl-] leaves).  xen-netback is not loaded:
LAB:   kernel backend: modprobe xen-netback
LAB:   our daemon:     RUST_LOG=info /mnt/host/netback --xen $NETBACK_ARGS &
LAB: The whole test: /mnt/host/lab/main.sh run (results in /mnt/host/results).
LAB: Leave with: echo o > /proc/sysrq-trigger, or Ctrl-a x.
EOF
    echo 1 > /proc/sys/kernel/sysrq
    exec setsid sh -c 'exec bash -l </dev/hvc0 >/dev/hvc0 2>&1'
fi

# heartbeat on the console: tells a hung VM from a stuck step in the serial log
( while :; do sleep 30; echo "LAB-HB uptime $(cut -d' ' -f1 /proc/uptime) load $(cut -d' ' -f1-3 /proc/loadavg)"; done ) &
HBPID=$!
echo "LAB-INFO mode=$MODE runs=$RUNS iperf=${IPERF_SECS}s udp=${UDP_SECS}s pings=$PING_COUNT flood=$FLOOD_COUNT nbtest=$NBTEST hostile=$HOSTILE profile=${PROFILE:-0} rev=$(cat "$L/git-rev")"

# ---- phase kernel ---------------------------------------------------------------------
phase_kernel() {
    local P=kernel; mkdir -p "$R/$P"
    T phase-kernel
    modprobe xen-netback || { check $P module fail "modprobe xen-netback failed"; return 1; }
    if create_and_ping $P "" /tmp/domU.cfg domU "$DOMU_IP"; then
        snapshot $P connected
        measure $P "$DOMU_IP"
        [ "$NBTEST" != 0 ] && nbtest $P
        snapshot $P after
    else
        diag $P create
    fi
    destroy_clean $P "" domU || diag $P destroy
    T phase-kernel-done
}

# ---- phase ours -----------------------------------------------------------------------
# the daemon log's first error line (or its last line), without colours
first_error() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | awk 'NF { last = $0 } /[Ee][Rr][Rr][Oo][Rr]|panicked/ && !e { e = $0 } END { print (e ? e : last) }'
}
daemon_alive() { [ -n "$NBPID" ] && kill -0 "$NBPID" 2>/dev/null; }
# after a failed step: is the daemon still there?  If not, say so once and stop the phase.
daemon_gone() {
    [ -z "$NBPID" ] && return 0
    daemon_alive && return 1
    local rc; wait "$NBPID" 2>/dev/null; rc=$?
    check ours daemon-alive fail "the daemon exited (status $rc): $(first_error "$R/ours/netback.log")"
    NBPID=
    return 0
}

# hostile <mode> [args]: netfront-test --hostile <mode> in a fresh nbtest domU (see
# lab/README.md). Passes when the guest says rc=0 (our daemon reacted as Linux netback
# does), the daemon is still alive, domU still answers ping and the hostile domU's backend
# directory went away with it. Check hostile-<mode>, detail: the guest's "hostile" line.
hostile() {
    local P=ours mode=$1 line why=; shift
    if ! nbtest_run $P "hostile-$mode" "--ip 10.99.0.3 --timeout $HOSTILE_WAIT --hostile $mode $*"; then
        check $P "hostile-$mode" fail "xl create of the nbtest domU failed"
        return 1
    fi
    line=$(tr -d '\r' < "$NBT_LOG" 2>/dev/null | grep -a "^hostile $mode:" | tail -n 1)
    [ -n "$line" ] || line="no report line; last: $(tr -d '\r' < "$NBT_LOG" 2>/dev/null | grep -a -v '^NBTEST-DONE' | grep -a . | tail -n 1)"
    [ "$NBT_RC" = 0 ] || why="$why; netfront-test rc=${NBT_RC:-none (no NBTEST-DONE within ${NBTEST_TIMEOUT} s)}"
    daemon_alive || why="$why; the daemon exited"
    [ "$NBT_CLEAN" = yes ] || why="$why; destroy not clean: $NBT_DESTROY"
    wait_ping "$DOMU_IP" 10 || why="$why; domU ($DOMU_IP) no longer answers ping"
    if [ -z "$why" ]; then
        check $P "hostile-$mode" pass "$line (rc=0 in $NBT_SECS s; daemon alive, $DOMU_IP answers, $NBT_DESTROY)"
    else
        check $P "hostile-$mode" fail "$line (${why#; })"
        diag $P "hostile-$mode"
        return 1
    fi
}

# usage <pid>: "<descriptors> <memory mappings> <RSS kB>" of a process
usage() {
    echo "$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) $(wc -l < "/proc/$1/maps") $(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status")"
}

# soak <phase> <backend dir>: SOAK_CYCLES more `xl network-detach` + `network-attach` of
# domU's vif (the cycle above warmed up). Passes if every cycle worked, domU answers at the
# end, and the daemon holds no more descriptors, at most 16 more mappings and at most 8 MB
# more RSS than before: grant mappings, event channels and TAPs of detached vifs are gone.
soak() {
    local P=$1 B=$2 u0 u1 k fails=0 t0
    T "$P-soak"
    u0=$(usage "$NBPID"); t0=$(now)
    for k in $(seq 1 "$SOAK_CYCLES"); do
        if ! timeout 90 xl network-detach domU 0 >/dev/null 2>&1 || ! wait_gone "$B" 10; then
            fails=$((fails + 1)); echo "LAB-INFO soak cycle $k: detach failed"
        fi
        if ! timeout 90 xl network-attach domU "mac=$DOMU_MAC,bridge=xenbr0" >/dev/null 2>&1; then
            fails=$((fails + 1)); echo "LAB-INFO soak cycle $k: attach failed"
        fi
    done
    wait_ping "$DOMU_IP" "$PING_WAIT" || { fails=$((fails + 1)); echo "LAB-INFO soak: $DOMU_IP silent at the end"; }
    metric $P soak_cycle_s "" "$(awk -v t="$(since "$t0")" -v n="$SOAK_CYCLES" 'BEGIN { printf "%.2f", t / n }')"
    sleep 1
    u1=$(usage "$NBPID")
    set -- $u0 $u1
    local detail="$SOAK_CYCLES detach+attach cycles in $(since "$t0") s; daemon fds $1 -> $4, mappings $2 -> $5, RSS $3 -> $6 kB"
    if [ $fails = 0 ] && [ "$4" -le "$1" ] && [ "$5" -le $(($2 + 16)) ] && [ "$6" -le $(($3 + 8192)) ]; then
        check $P soak pass "$detail"
    else
        check $P soak fail "$detail; $fails failed steps"
        diag $P soak
    fi
}

# restart <phase> <backend dir> <domid>: the hitless restart (docs/restart.md). While dom0
# pings domU 20 times a second, `kill -9` the daemon and start it again with the same
# arguments. Passes if: the new daemon took the vif over ("taken over" in its log), no
# write hit the backend's or frontend's `state` node (xenstore-watch saw only its first
# event), vif<domid>.0 stayed on xenbr0 throughout, and pings flow again; the pings lost
# across the restart are the metric restart_lost_pings.
restart() {
    local P=$1 B=$2 domid=$3 F t0 w1 w2 pingpid rc sent got lost why=
    F=/local/domain/$domid/device/vif/0
    T "$P-restart"
    xenstore-watch "$B/state" > "$R/$P/restart-watch-backend.txt" 2>&1 & w1=$!
    xenstore-watch "$F/state" > "$R/$P/restart-watch-frontend.txt" 2>&1 & w2=$!
    ping -i 0.05 -c 200 -W 1 "$DOMU_IP" > "$R/$P/restart-ping.txt" 2>&1 & pingpid=$!
    sleep 3
    t0=$(now)
    kill -KILL "$NBPID"; wait "$NBPID" 2>/dev/null
    ip -o link show "vif$domid.0" > "$R/$P/restart-link-after-kill.txt" 2>&1
    grep -q 'master xenbr0' "$R/$P/restart-link-after-kill.txt" || why="$why; vif$domid.0 left xenbr0 with the daemon"
    # shellcheck disable=SC2086
    NO_COLOR=1 RUST_LOG=$NETBACK_LOG /mnt/host/netback --xen $NETBACK_ARGS > "$R/$P/netback-restarted.log" 2>&1 &
    NBPID=$!
    wait "$pingpid"
    metric $P restart_s "" "$(since "$t0")"
    sleep 1
    kill "$w1" "$w2" 2>/dev/null
    sent=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1/p' "$R/$P/restart-ping.txt")
    got=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\2/p' "$R/$P/restart-ping.txt")
    lost=$(( ${sent:-0} - ${got:-0} ))
    metric $P restart_lost_pings "" "$lost"
    daemon_alive || why="$why; the restarted daemon exited: $(first_error "$R/$P/netback-restarted.log")"
    grep -q 'taken over' "$R/$P/netback-restarted.log" || why="$why; no 'taken over' in the new daemon's log"
    [ "$(grep -c . "$R/$P/restart-watch-backend.txt")" -le 1 ] || why="$why; the backend state was written: $(tr '\n' ' ' < "$R/$P/restart-watch-backend.txt")"
    [ "$(grep -c . "$R/$P/restart-watch-frontend.txt")" -le 1 ] || why="$why; the frontend state was written: $(tr '\n' ' ' < "$R/$P/restart-watch-frontend.txt")"
    [ "$(xenstore-read "$B/state" 2>/dev/null)" = 4 ] || why="$why; backend state $(xenstore-read "$B/state" 2>/dev/null)"
    ip -o link show "vif$domid.0" 2>/dev/null | grep -q 'master xenbr0' || why="$why; vif$domid.0 is not on xenbr0 after the restart"
    wait_ping "$DOMU_IP" 10 || why="$why; $DOMU_IP silent after the restart"
    local detail="kill -9 + start during ping -i 0.05: ${got:-?}/${sent:-?} answered, $lost lost; vif$domid.0 stayed on xenbr0; no state write"
    if [ -z "$why" ]; then
        check $P restart pass "$detail"
    else
        check $P restart fail "${why#; }"
        diag $P restart
    fi
}

phase_ours() {
    local P=ours domid B t0 rc ctl
    mkdir -p "$R/$P"
    T phase-ours
    if lsmod | grep -q '^xen_netback'; then
        rmmod xen-netback || { check $P rmmod fail "rmmod xen-netback failed"; return 1; }
    fi
    check $P rmmod pass "xen-netback unloaded"
    echo "LAB-INFO starting: RUST_LOG=$NETBACK_LOG /mnt/host/netback --xen $NETBACK_ARGS"
    ctl=$(echo "$NETBACK_ARGS" | sed -n 's/.*--control[ =]\([^ ]*\).*/\1/p')
    [ -n "$ctl" ] && rm -f "$ctl"
    # shellcheck disable=SC2086
    NO_COLOR=1 RUST_LOG=$NETBACK_LOG /mnt/host/netback --xen $NETBACK_ARGS > "$R/$P/netback.log" 2>&1 &
    NBPID=$!
    # ready when its control socket appears (if --control is given); dead = failed
    local i; t0=$(now)
    for i in $(seq 1 50); do
        daemon_alive || break
        [ -n "$ctl" ] && [ -S "$ctl" ] && break
        [ -z "$ctl" ] && [ "$i" -ge 10 ] && break
        sleep 0.2
    done
    sleep 0.5
    if ! daemon_alive; then
        wait "$NBPID"; rc=$?; NBPID=
        check $P daemon-start fail "netback --xen exited at once (status $rc): $(first_error "$R/$P/netback.log")"
        diag $P daemon-start
        return 1
    fi
    check $P daemon-start pass "pid $NBPID"
    if [ -n "$ctl" ]; then
        [ -S "$ctl" ] && check $P control-socket pass "$ctl after $(since "$t0") s" \
                      || check $P control-socket warn "no socket $ctl after $(since "$t0") s"
    fi

    # knobs for every vif to come (NBCTL_SET, e.g. "--tx-map-min 4096")
    if [ -n "${NBCTL_SET:-}" ]; then
        # shellcheck disable=SC2086
        if /mnt/host/nbctl --control "${ctl:-/run/netback/netback.sock}" set $NBCTL_SET > "$R/$P/nbctl-set.txt" 2>&1; then
            check $P knobs info "nbctl set $NBCTL_SET"
        else
            check $P knobs fail "nbctl set $NBCTL_SET: $(tail -n 1 "$R/$P/nbctl-set.txt")"
        fi
    fi

    if create_and_ping $P "" /tmp/domU.cfg domU "$DOMU_IP"; then
        snapshot $P connected
        measure $P "$DOMU_IP"
        if [ "${PROFILE:-0}" != 0 ]; then
            NBCTL_SOCK=${ctl:-/run/netback/netback.sock} profile "$DOMU_IP" "vif$(xl domid domU).0"
        fi
        if [ "$NBTEST" != 0 ]; then
            if daemon_alive; then nbtest $P; else check $P netfront-test skip "the daemon is gone"; fi
        fi
        if [ "$HOSTILE" != 0 ]; then
            T ours-hostile
            local t_hostile mode; t_hostile=$(now)
            for mode in ungranted-ring ring-overflow "bad-tx-gref --ping $DOMU_IP --count 3"; do
                # shellcheck disable=SC2086
                if daemon_alive; then hostile $mode; else check $P "hostile-${mode%% *}" skip "the daemon is gone"; fi
            done
            metric $P hostile_s "" "$(since "$t_hostile")"
            T ours-hostile-done
        fi
        snapshot $P after
    else
        diag $P create
        daemon_gone && { xl destroy domU >/dev/null 2>&1; return 1; }
    fi
    daemon_gone && { xl destroy domU >/dev/null 2>&1; diag $P daemon-died; return 1; }

    # -- toolstack contract
    T ours-contract
    if domid=$(xl domid domU 2>/dev/null); then
        B=/local/domain/0/backend/vif/$domid/0
        t0=$(now)
        timeout 90 xl network-detach domU 0 > "$R/$P/xl-network-detach.txt" 2>&1; rc=$?
        metric $P detach_s "" "$(since "$t0")"
        if [ $rc = 0 ] && wait_gone "$B" 10; then
            check $P detach pass "xl network-detach rc=0 in $(since "$t0") s, $B gone"
        else
            check $P detach fail "xl network-detach rc=$rc, $B $(xenstore-exists "$B" && echo "still there (state $(xenstore-read "$B/state" 2>/dev/null))" || echo gone)"
            diag $P detach
        fi
        sleep 1
        [ -e "/sys/class/net/vif$domid.0" ] && check $P vif-gone-detach warn "vif$domid.0 still exists after detach"
        t0=$(now)
        timeout 90 xl network-attach domU "mac=$DOMU_MAC,bridge=xenbr0" > "$R/$P/xl-network-attach.txt" 2>&1; rc=$?
        if [ $rc != 0 ]; then
            check $P attach fail "xl network-attach rc=$rc: $(tail -n 2 "$R/$P/xl-network-attach.txt" | tr '\n' ' ')"
            diag $P attach
        elif link_check $P -attach "vif$domid.0" && wait_ping "$DOMU_IP" "$PING_WAIT"; then
            metric $P attach_to_ping_s "" "$(since "$t0")"
            check $P attach pass "xl network-attach rc=0, $DOMU_IP answers $(since "$t0") s later"
        else
            check $P attach fail "after xl network-attach $DOMU_IP does not answer"
            diag $P attach
        fi
        [ "${RESTART:-0}" != 0 ] && daemon_alive && restart $P "$B" "$domid"
        [ "${SOAK_CYCLES:-0}" -gt 0 ] && daemon_alive && soak $P "$B"
    fi
    destroy_clean $P "" domU || diag $P destroy
    daemon_gone && return 1

    create_and_ping $P 2 /tmp/domU.cfg domU "$DOMU_IP" || diag $P create2
    destroy_clean $P 2 domU || diag $P destroy2
    daemon_gone && return 1
    check $P daemon-alive pass "pid $NBPID survived create, detach, attach, destroy, create, destroy"

    # -- SIGTERM: the daemon exits 0 within 15 s
    snapshot $P before-sigterm
    kill -TERM "$NBPID"
    local i; for i in $(seq 1 75); do daemon_alive || break; sleep 0.2; done
    if daemon_alive; then
        check $P sigterm fail "still running 15 s after SIGTERM; sending SIGKILL"
        kill -KILL "$NBPID"; wait "$NBPID" 2>/dev/null
        diag $P sigterm
    else
        wait "$NBPID"; rc=$?
        [ $rc = 0 ] && check $P sigterm pass "exit status 0 after SIGTERM" \
                    || { check $P sigterm fail "exit status $rc after SIGTERM"; diag $P sigterm; }
    fi
    NBPID=
}

phase_kernel
phase_ours || true
# whatever happened, stop the daemon and keep the final state for the record
if daemon_alive; then kill -TERM "$NBPID"; sleep 3; kill -KILL "$NBPID" 2>/dev/null; fi
mkdir -p "$R/ours"
diag ours end
mkdir -p "$R/xen-logs"; cp -r /var/log/xen/. "$R/xen-logs/" 2>/dev/null
xl dmesg > "$R/xen-logs/xl-dmesg.txt" 2>&1
dmesg > "$R/xen-logs/dom0-dmesg.txt" 2>&1
sync
kill "$HBPID" 2>/dev/null
T lab-done
echo "LAB-DONE"
