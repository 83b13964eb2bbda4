#!/usr/bin/env bash
# Runs the netbench comparisons behind BENCHMARKS.md: torsion serve against the reference
# peers, pinned (load generator on CPU 0, server on CPU 1), alternating A/B rounds.
#
#   scripts/netbench-compare.sh [ONLY-regex] > netbench.log 2>&1
#
# Needs `cargo build --release` here and netbench built (NB=path/to/netbench; default
# ../shared/netbench/target/release/netbench). ROUNDS (5), SECS (3) and WARMUP (1) tune it;
# T=path/to/torsion measures another build (default target/release/torsion).
set -uo pipefail
cd "$(dirname "$0")/.."
NB=${NB:-../shared/netbench/target/release/netbench}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
WARMUP=${WARMUP:-1}
ONLY=${1:-.}
T=${T:-target/release/torsion}

run() { # label, a-cmd, b-cmd, b-name, netbench args...
  local label=$1 a=$2 b=$3 bname=$4
  shift 4
  [[ $label =~ $ONLY ]] || return 0
  echo "=== $label (torsion vs $bname)"
  "$NB" compare --a "$a" --name-a torsion --b "$b" --name-b "$bname" \
    --rounds "$ROUNDS" -d "$SECS" --warmup "$WARMUP" --pin-client 0 --pin-server 1 "$@" 2>&1 |
    grep -E '^(RESULT|ROUND|SUMMARY|RATIO)|errors [1-9]'
}

# backlog=1024 as the peers listen with (tokio and mio use 1024); torsion defaults to 50.
TCP="$T serve echo --listen tcp:{port}:interface=127.0.0.1:backlog=1024"
UNIX="$T serve echo --listen unix:{path}"
UDP="$T serve echo --listen udp:{port}:interface=127.0.0.1"
for peer in tokio-st mio; do
  P="$NB peer $peer --port {port}"
  for c in 1 64 1000; do
    run "pingpong-tcp-c$c-$peer" "$TCP" "$P" "$peer" --scenario pingpong -c "$c"
  done
  run "bulk-tcp-c1-$peer" "$TCP" "$P" "$peer" --scenario bulk -c 1
done
P="$NB peer tokio-st --port {port}"
run "bulk-tcp-c8-tokio-st" "$TCP" "$P" tokio-st --scenario bulk -c 8
run "churn-tcp-c16-tokio-st" "$TCP" "$P" tokio-st --scenario churn -c 16
U="$NB peer tokio-st --unix {path}"
run "bulk-unix-c1-tokio-st" "$UNIX" "$U" tokio-st --scenario bulk --transport unix -c 1
run "pingpong-unix-c1-tokio-st" "$UNIX" "$U" tokio-st --scenario pingpong --transport unix -c 1
run "pingpong-unix-c64-tokio-st" "$UNIX" "$U" tokio-st --scenario pingpong --transport unix -c 64
D="$NB peer tokio-st --udp --port {port}"
run "udp-s64-tokio-st" "$UDP" "$D" tokio-st --scenario udp -s 64
run "udp-s1200-tokio-st" "$UDP" "$D" tokio-st --scenario udp -s 1200
ROUNDS=1 run "idle-tcp-c10000-tokio-st" "$TCP" "$P" tokio-st --scenario idle -c 10000
# The same server with busy polling off (`--busy-poll-us 0`), where it shows most: one client
# at a time.
run "pingpong-tcp-c1-tokio-st-nobusypoll" "$TCP --busy-poll-us 0" "$P" tokio-st --scenario pingpong -c 1
run "pingpong-unix-c1-tokio-st-nobusypoll" "$UNIX --busy-poll-us 0" "$U" tokio-st --scenario pingpong --transport unix -c 1
# Control: torsion against itself. The spread of these ratios is this run's noise band; a
# row above closer to 1.0 than that says "parity", not "faster" or "slower".
run "self-pingpong-tcp-c64" "$TCP" "$TCP" torsion-again --scenario pingpong -c 64
run "self-bulk-unix-c1" "$UNIX" "$UNIX" torsion-again --scenario bulk --transport unix -c 1
