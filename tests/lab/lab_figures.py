"""Figures of the lab runs as report lines: pod start and pod network, hull vs runc (issues 12,
13, 15), and the number helpers lab.py's reports share. Figures are printed, never judged."""

import statistics


def median(values):
    return statistics.median(values) if values else None


def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return -1.0


def fmt_num(v):
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def pod_bench_lines(bench, name):
    """Pod start (RunPodSandbox + CreateContainer + StartContainer, one container), hull vs runc."""
    rows = {rt: bench.get((name, rt)) for rt in ("hull", "runc")}
    if not any(rows.values()):
        return []

    def figures(rt, key):
        return [_num(v) for v in (rows[rt] or {}).get(key, "").split()]

    lines = ["    pod start in L1 (RunPodSandbox + CreateContainer + StartContainer, 1 container; figures only):"]
    for key, label in (("total_ms", "total"), ("run_ms", "RunPodSandbox"), ("create_ms", "CreateContainer"),
                       ("start_ms", "StartContainer")):  # fmt: skip
        h, r = figures("hull", key), figures("runc", key)
        mh, mr = median(h), median(r)
        ratio = f"{mh / mr:.1f}x" if mh and mr else "-"
        lines.append(
            f"      {label:<16} hull median {fmt_num(mh):>6} ms {[round(v) for v in h]}  "
            f"runc median {fmt_num(mr):>6} ms {[round(v) for v in r]}  hull/runc {ratio}"
        )
    return lines


def net_bench_lines(bench, name):
    """Network L1 <-> pod (LAB-NET-BENCH), hull vs runc from one run: bulk throughput both ways and
    small-request latency, with the hull/runc ratios."""
    rows = {rt: bench.get((name, rt)) for rt in ("hull", "runc")}
    if not any(rows.values()):
        return []

    def figures(rt, key):
        return [_num(v) for v in (rows[rt] or {}).get(key, "").split()]

    bulk = (rows["hull"] or rows["runc"]).get("bulk_mib", "?")
    lines = [f"    pod network from L1 (bridge CNI; {bulk} MiB transfers, small GETs on new connections; figures only):"]
    for key, label, unit, better in (("down_mbit", "download pod->L1", "Mbit/s", "higher"),
                                     ("up_mbit", "upload L1->pod", "Mbit/s", "higher"),
                                     ("req_ms", "request latency", "ms", "lower")):  # fmt: skip
        h, r = figures("hull", key), figures("runc", key)
        mh, mr = median(h), median(r)
        ratio = f"{mh / mr:.2f}x" if mh and mr else "-"
        spread = (lambda v: f"p90 {fmt_num(p90(v))}") if key == "req_ms" else (lambda v: str([round(x) for x in v]))
        lines.append(
            f"      {label:<17} hull median {fmt_num(mh):>6} {unit} {spread(h)}  "
            f"runc median {fmt_num(mr):>6} {unit} {spread(r)}  hull/runc {ratio} ({better} is better)"
        )
    return lines


def p90(values):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


