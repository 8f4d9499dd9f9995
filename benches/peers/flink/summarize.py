"""Summarises the ROUND lines compare.sh collected: per job and engine the medians, the check
that both engines computed the same result, and one RATIO line per job.

    summarize.py RESULTS_FILE
"""

import statistics
import sys


def parse(line):
    """The `name=value` fields of a line; the first of a name wins, so the `job=` of the ROUND
    prefix (`tumbling-lmdb`) is kept over the RESULT line's own (`tumbling`)."""
    fields = {}
    for token in line.split():
        if "=" in token:
            name, value = token.split("=", 1)
            fields.setdefault(name, value)
    return fields


def number(fields, name):
    value = fields.get(name)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


# The result fields that must agree between the engines, per job (session windows depend on
# when watermarks arrive, so their number is not compared).
CHECKED = ("outputs", "count_sum", "matches")


def main(path):
    rounds = {}
    order = []
    with open(path, encoding="utf-8") as results:
        for line in results:
            if not line.startswith("ROUND "):
                continue
            fields = parse(line)
            job = fields["job"]
            engine = fields["engine"]
            if job not in order:
                order.append(job)
            rounds.setdefault((job, engine), []).append(fields)
    header = (
        f"{'job':<22} {'engine':<9} {'rounds':>6} {'events/s':>14} {'events/cpu-s':>14} "
        f"{'peak_rss_kb':>12} {'p50_us':>9} {'p99_us':>9} {'p999_us':>9}"
    )
    print(header)
    print("-" * len(header))
    ratios = []
    problems = 0
    for job in order:
        summary = {}
        for engine in ("eichhorn", "flink"):
            runs = rounds.get((job, engine), [])
            latency = job.startswith("latency-")
            if latency:
                eps = median([number(r, "rate") for r in runs])
            else:
                eps = median([number(r, "events_per_s") for r in runs])
            per_cpu = median(
                [
                    number(r, "events") / number(r, "cpu_s")
                    if number(r, "events") and number(r, "cpu_s")
                    else None
                    for r in runs
                ]
            )
            rss = median([number(r, "peak_rss_kb") for r in runs])
            p50 = median([number(r, "p50_us") for r in runs])
            p99 = median([number(r, "p99_us") for r in runs])
            p999 = median([number(r, "p999_us") for r in runs])
            summary[engine] = dict(eps=eps, rss=rss, p99=p99)
            print(
                f"{job:<22} {engine:<9} {len(runs):>6} {fmt(eps):>14} {fmt(per_cpu):>14} "
                f"{fmt(rss):>12} {fmt(p50):>9} {fmt(p99):>9} {fmt(p999):>9}"
            )
        for name in CHECKED:
            if job.startswith("session"):
                break
            values = {
                engine: sorted({r.get(name) for r in rounds.get((job, engine), []) if name in r})
                for engine in ("eichhorn", "flink")
            }
            if values["eichhorn"] and values["flink"]:
                same = values["eichhorn"] == values["flink"] and len(values["eichhorn"]) == 1
                status = "ok" if same else "MISMATCH"
                problems += 0 if same else 1
                print(
                    f"CHECK job={job} {name} eichhorn={','.join(values['eichhorn'])} "
                    f"flink={','.join(values['flink'])} {status}"
                )
        e, f = summary["eichhorn"], summary["flink"]
        ratio = e["eps"] / f["eps"] if e["eps"] and f["eps"] else None
        line = (
            f"RATIO job={job} eichhorn_eps={fmt(e['eps']).replace(',', '')} "
            f"flink_eps={fmt(f['eps']).replace(',', '')} ratio={fmt(ratio, 2).replace(',', '')} "
            f"eichhorn_rss_kb={fmt(e['rss']).replace(',', '')} flink_rss_kb={fmt(f['rss']).replace(',', '')}"
        )
        if job.startswith("latency-"):
            line += (
                f" eichhorn_p99_us={fmt(e['p99']).replace(',', '')}"
                f" flink_p99_us={fmt(f['p99']).replace(',', '')}"
            )
        ratios.append(line)
    print()
    for line in ratios:
        print(line)
    if problems:
        print(f"summarize: {problems} result check(s) differ between the engines", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULTS_FILE")
    main(sys.argv[1])
