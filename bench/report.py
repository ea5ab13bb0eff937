#!/usr/bin/env python3
"""The table of bench/compare.sh, from its raw results (one JSON object a line:
{"round", "workload", "system": keel|nats|machine, "result": <keel bench JSON>}).

Each cell is the median over the rounds; the ratio is the median of the per-round ratios
(Keel / NATS, or Keel / ceiling), with their range when there are several rounds, so that a
ratio always compares figures from the same round.
"""
import argparse
import json
import statistics
import sys

# workload key, label, metric (a path into the result), unit, higher is better
ROWS = [
    ("a_durable", "a. 1 KiB max throughput (NATS sync_interval: always)", ("mb_per_s",), "MB/s", True),
    ("a_relaxed", "a. 1 KiB max throughput (NATS default sync)", ("mb_per_s",), "MB/s", True),
    ("c_small", "c. 100 B max records/s", ("records_per_s",), "rec/s", True),
    ("b_publish", "b. publish latency p50 at half peak", ("latency_ms", "p50"), "ms", False),
    ("b_publish", "b. publish latency p99 at half peak", ("latency_ms", "p99"), "ms", False),
    ("b_publish", "b. publish latency p999 at half peak", ("latency_ms", "p999"), "ms", False),
    ("b_e2e", "b. end-to-end latency p50 at half peak", ("latency_ms", "p50"), "ms", False),
    ("b_e2e", "b. end-to-end latency p99 at half peak", ("latency_ms", "p99"), "ms", False),
    ("b_e2e", "b. end-to-end latency p999 at half peak", ("latency_ms", "p999"), "ms", False),
    ("d_backlog", "d. one consumer reading the backlog", ("mb_per_s",), "MB/s", True),
]
CEILINGS = [
    ("e_dd", "e. dd sequential write, fdatasync", "MB/s"),
    ("e_loopback", "e. loopback TCP, memory to memory", "MB/s"),
]


def metric(result, path):
    value = result
    for key in path:
        value = value[key]
    return float(value)


def load(path):
    """{(workload, system): {round: result}}"""
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    # A workload that failed leaves an empty result: report the others.
                    print(f"report.py: skipped a broken result: {line.strip()[:120]}", file=sys.stderr)
                    continue
                runs.setdefault((row["workload"], row["system"]), {})[row["round"]] = row["result"]
    return runs


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def build(runs):
    """The rows: per workload the medians and the same-round ratios."""
    rows = []
    for key, label, path, unit, higher in ROWS:
        keel, nats = runs.get((key, "keel"), {}), runs.get((key, "nats"), {})
        rounds = sorted(set(keel) & set(nats))
        k = [metric(keel[r], path) for r in rounds]
        n = [metric(nats[r], path) for r in rounds]
        ratios = [a / b for a, b in zip(k, n) if b > 0]
        rows.append({"workload": key, "label": label, "unit": unit, "higher_is_better": higher,
                     "keel": summary(k), "nats": summary(n), "keel_over_nats": summary(ratios)})
    ceiling = {}
    for key, label, unit in CEILINGS:
        values = runs.get((key, "machine"), {})
        ceiling[key] = values
        rows.append({"workload": key, "label": label, "unit": unit, "higher_is_better": True,
                     "machine": summary([metric(v, ("mb_per_s",)) for v in values.values()])})
    # (d) against the memory-to-socket ceiling of the same round.
    for system in ("keel", "nats"):
        reads = runs.get(("d_backlog", system), {})
        tcp = ceiling.get("e_loopback", {})
        ratios = [metric(reads[r], ("mb_per_s",)) / metric(tcp[r], ("mb_per_s",))
                  for r in sorted(set(reads) & set(tcp))]
        rows.append({"workload": f"d_over_loopback_{system}",
                     "label": f"d. {system} backlog read / loopback TCP", "unit": "ratio",
                     "higher_is_better": True, "ratio": summary(ratios)})
    return rows


def fmt(x):
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def cell(s, ratio=False):
    if s is None:
        return "-"
    text = f"{s['median']:.2f}" if ratio else fmt(s["median"])
    if s["n"] > 1:
        lo, hi = (f"{s['min']:.2f}", f"{s['max']:.2f}") if ratio else (fmt(s["min"]), fmt(s["max"]))
        text += f" ({lo}-{hi})"
    return text


def table(rows, rounds):
    lines = [f"rounds: {rounds}; cells: median (min-max); ratio: Keel / NATS of the same round",
             "| workload | unit | Keel | NATS | Keel / NATS |", "|---|---|---|---|---|"]
    for row in rows:
        if "machine" in row:
            lines.append(f"| {row['label']} | {row['unit']} | {cell(row['machine'])} | | |")
        elif "ratio" in row:
            lines.append(f"| {row['label']} | ratio | | | {cell(row['ratio'], True)} |")
        else:
            lines.append(f"| {row['label']} | {row['unit']} | {cell(row['keel'])} | "
                         f"{cell(row['nats'])} | {cell(row['keel_over_nats'], True)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("raw")
    args = parser.parse_args()
    runs = load(args.raw)
    rounds = max((r for v in runs.values() for r in v), default=0)
    rows = build(runs)
    if args.output == "json":
        json.dump({"rounds": rounds, "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print(table(rows, rounds))


if __name__ == "__main__":
    main()
