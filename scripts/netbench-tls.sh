#!/usr/bin/env bash
# The TLS comparisons behind BENCHMARKS.md: `torsion serve echo` on a tls: endpoint against
# netbench's tokio-st peer (tokio-rustls), with the harness's own certificate and key.
#
#   scripts/netbench-tls.sh [ONLY-regex] > netbench-tls.log 2>&1
#
# Same environment as scripts/netbench-compare.sh (NB, ROUNDS, SECS, WARMUP, T).
set -uo pipefail
cd "$(dirname "$0")/.."
NB=${NB:-../shared/netbench/target/release/netbench}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
WARMUP=${WARMUP:-1}
ONLY=${1:-.}
T=${T:-target/release/torsion}
A="$T serve echo --listen tls:{port}:interface=127.0.0.1:certKey={cert}:privateKey={key}"
B="$NB peer tokio-st --port {port} --tls {cert} {key}"
for spec in "bulk-tls-c1:bulk:1" "bulk-tls-c8:bulk:8" "pingpong-tls-c64:pingpong:64" "churn-tls-c16:churn:16"; do
  IFS=: read -r label scenario conns <<<"$spec"
  [[ $label =~ $ONLY ]] || continue
  echo "=== $label (torsion vs tokio-st)"
  "$NB" compare --a "$A" --name-a torsion --b "$B" --name-b tokio-st --transport tls \
    --scenario "$scenario" -c "$conns" --rounds "$ROUNDS" -d "$SECS" --warmup "$WARMUP" \
    --pin-client 0 --pin-server 1 2>&1 | grep -E '^(RESULT|ROUND|SUMMARY|RATIO)|errors [1-9]'
done
