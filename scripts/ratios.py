#!/usr/bin/env python3
"""Summarise scripts/netbench-compare.sh logs: per comparison, the median of the per-round
torsion/peer ratios of the main metric and of the server CPU cost per operation.

    python3 scripts/ratios.py netbench.log [more.log ...]

With several logs, the rounds of comparisons that share a label are pooled (one row each,
n counts the rounds of all logs).
"""
import re
import statistics
import sys

MAIN = {"pingpong": "rtt_per_s", "bulk": "mib_per_s", "churn": "conns_per_s",
        "udp": "dgrams_per_s", "idle": "rss_kib_per_conn"}
CPU = {"bulk": "cpu_us_per_mib"}


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main(paths):
    pooled = {}  # label -> {(log, round): {server: fields}}, in first-seen order
    for i, path in enumerate(paths):
        label = None
        for line in open(path):
            if line.startswith("=== "):
                label = line[4:].strip()
                pooled.setdefault(label, {})
            elif line.startswith("RESULT") and label:
                f = fields(line)
                pooled[label].setdefault((i, f.get("round")), {})[f.get("server")] = f
    rows = []
    for label, rounds in pooled.items():
        if not rounds:
            continue
        scenario = next(iter(rounds.values()))["torsion"]["scenario"] if any(
            "torsion" in r for r in rounds.values()) else "?"
        main_m = MAIN.get(scenario, "rtt_per_s")
        cpu_m = CPU.get(scenario, "cpu_us_per_op")
        out = [label]
        for metric in (main_m, cpu_m):
            ratios, a_vals, b_vals = [], [], []
            for r in rounds.values():
                peers = [k for k in r if k != "torsion"]
                if "torsion" not in r or not peers or metric not in r["torsion"] or metric not in r[peers[0]]:
                    continue
                a, b = float(r["torsion"][metric]), float(r[peers[0]][metric])
                a_vals.append(a)
                b_vals.append(b)
                if b:
                    ratios.append(a / b)
            if ratios:
                out.append(f"{metric}: torsion {statistics.median(a_vals):.2f} vs "
                           f"{statistics.median(b_vals):.2f}, ratio {statistics.median(ratios):.3f} "
                           f"({min(ratios):.2f}-{max(ratios):.2f}, n={len(ratios)})")
        rows.append(" | ".join(out))

    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
