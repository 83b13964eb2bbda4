#!/usr/bin/env bash
# Two builds of torsion against each other: `torsion serve echo` of build A (named torsion)
# against build B (named before), pinned, alternating rounds, in the log format
# scripts/ratios.py reads.
#
#   A=target/release/torsion B=/path/to/older/torsion scripts/netbench-ab.sh > ab.log 2>&1
#   python3 scripts/ratios.py ab.log
#
# Build B from a worktree of the older commit with its own CARGO_TARGET_DIR. NB, ROUNDS (8),
# SECS (3) and WARMUP (1) as in scripts/netbench-compare.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
NB=${NB:-../shared/netbench/target/release/netbench}
A=${A:-target/release/torsion}
B=${B:?B=path/to/the other torsion build}
ROUNDS=${ROUNDS:-8}
SECS=${SECS:-3}
WARMUP=${WARMUP:-1}

ab() { # label, server arguments, netbench arguments...
  local label=$1 args=$2
  shift 2
  echo "=== $label (torsion vs before)"
  "$NB" compare --a "$A $args" --name-a torsion --b "$B $args" --name-b before \
    --rounds "$ROUNDS" -d "$SECS" --warmup "$WARMUP" --pin-client 0 --pin-server 1 "$@" 2>&1 |
    grep -E '^(RESULT|ROUND|SUMMARY|RATIO)|errors [1-9]'
}

UNIX="serve echo --listen unix:{path}"
TCP="serve echo --listen tcp:{port}:interface=127.0.0.1:backlog=1024"
ab pingpong-unix-c64 "$UNIX" --scenario pingpong --transport unix -c 64
ab pingpong-tcp-c1000 "$TCP" --scenario pingpong -c 1000
ab pingpong-tcp-c64 "$TCP" --scenario pingpong -c 64
ab bulk-unix-c1 "$UNIX" --scenario bulk --transport unix -c 1
ab bulk-tcp-c1 "$TCP" --scenario bulk -c 1
