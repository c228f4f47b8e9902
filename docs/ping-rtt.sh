#!/bin/bash
# Lone ping-pong RTT on the simulated host, default knobs against unbatched ones
# (tx/rx-drain-max, copy-batch and notify-every all 1), alternating ROUNDS times; each
# measurement is a fresh guest pinging a receiver 300 times. Prints min/median/p90 in µs.
# Usage: cargo build --release && bash docs/ping-rtt.sh [ROUNDS]
set -euo pipefail
B=${B:-target/release}
ROUNDS=${1:-5}
export NETBACK_SIM_DIR=$(mktemp -d /tmp/nb-rtt.XXXXXX)
"$B/netback" --embedded --sim-dir "$NETBACK_SIM_DIR" >"$NETBACK_SIM_DIR.log" 2>&1 &
daemon=$!
trap 'kill $daemon ${peer:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$NETBACK_SIM_DIR" "$NETBACK_SIM_DIR.log"' EXIT
for _ in $(seq 50); do [ -S "$NETBACK_SIM_DIR/netback.sock" ] && break; sleep 0.1; done

guest() {  # creates a domain, attaches its vif; sets DOMID and NETBACK_SIM_TOKEN
  local out; out=$("$B/nbctl" domain create "$1" 2>&1)
  DOMID=$(grep -o 'created domain [0-9]*' <<<"$out" | grep -o '[0-9]*$')
  eval "$(grep ^export <<<"$out")"
  "$B/nbctl" attach "$DOMID" --mac "00:16:3e:00:01:$(printf %02x "$DOMID")" >/dev/null
}
guest peer
"$B/netfront-test" --sim --ip 10.0.0.2 --receive 3600 >/dev/null &
peer=$!
rtt() {
  guest pinger
  "$B/netfront-test" --sim --ip "10.0.1.$DOMID" --ping 10.0.0.2 --count 300 2>/dev/null |
    grep -o 'time=[0-9.]*µs' | sed 's/time=//; s/µs//' | sort -n |
    awk '{a[NR]=$1} END {printf "min %.1f median %.1f p90 %.1f (n=%d) µs\n", a[1], a[int(NR/2)], a[int(NR*0.9)], NR}'
}
for _ in $(seq "$ROUNDS"); do
  printf "default:   "; rtt
  "$B/nbctl" set --tx-drain-max 1 --rx-drain-max 1 --copy-batch 1 --notify-every 1 >/dev/null
  printf "unbatched: "; rtt
  "$B/nbctl" set --tx-drain-max 64 --rx-drain-max 64 --copy-batch 64 --notify-every 64 >/dev/null
done
