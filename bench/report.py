"""The report of a benchmark run: per dataset and in total, per scheme, the
figures ``bench.measure`` took, summed and turned into ratios (``summarize``),
and the Markdown a reader opens (``to_markdown``): the answers first (smallest,
fastest, pas against each alternative, distance to the entropy floor), then
memory, cold reads, K-plane reads and the per-version tables.
"""
from __future__ import annotations

from .floor import PlaneFloor
from .measure import median

# Reference footprints (MB) on the shared corpus: /work/shared/docs/compression-facts.md §5 and §7.
REFERENCE_MB = {
    "zstd3": {"lineage-finetune": 416.0, "lineage-finetune-bf16": 177.3, "snapshots-cnn": 53.0,
              "variants": 256.7, "all": 903.0},
    "blosc2": {"lineage-finetune": 378.6, "lineage-finetune-bf16": 157.1, "snapshots-cnn": 48.5,
               "variants": 233.6, "all": 817.7},
    "xor3": {"lineage-finetune": 207.4, "lineage-finetune-bf16": 62.3, "snapshots-cnn": 41.0,
             "variants": 149.7, "all": 460.4},
    "patch-from": {"lineage-finetune": 285.2, "lineage-finetune-bf16": 105.6, "snapshots-cnn": 53.1,
                   "variants": 130.1, "all": 574.0},
    "paper": {"all": 458.9},
}
MB = 1e6

def mbps(nbytes, seconds):
    return round(nbytes / MB / seconds, 2) if seconds else None


def chain_depth(ds, vid: str) -> int:
    """Versions on the path from the root to ``vid`` (root = 1)."""
    parent = {v.id: v.parent for v in ds.versions}
    n = 1
    while parent.get(vid):
        vid, n = parent[vid], n + 1
    return n


def retrieval_timings(ds, meta, per_v: list[dict], top: dict | None) -> dict:
    """Whole-version retrieval of the newest version (last archived), of a mid-chain
    version (the middle of the manifest order) and of all versions (sum of medians);
    with ``top``, K-plane retrieval of the newest version and its ratio to the full one."""
    by_id = {p["id"]: p for p in per_v}

    def one(v):
        p = by_id[v.id]
        return {"id": v.id, "depth": chain_depth(ds, v.id), "logical_bytes": p["logical_bytes"],
                "seconds": p["retrieve_s"], "mb_s": p["retrieve_mb_s"]}

    newest, mid = ds.versions[-1], ds.versions[(len(ds.versions) - 1) // 2]
    out = {"newest": one(newest), "mid": one(mid),
           "all": {"n": len(per_v), "seconds": sum(p["retrieve_s"] for p in per_v),
                   "mb_s": mbps(sum(p["logical_bytes"] for p in per_v), sum(p["retrieve_s"] for p in per_v))}}
    if top:
        full = by_id[top["version"]]["retrieve_s"]
        out["top_bytes"] = {str(k): dict(x, ratio_to_full=round(x["seconds"] / full, 4)
                                         if x.get("seconds") is not None and full else None)
                            for k, x in top["k"].items()}
    return out


def _merge_planes(lists) -> list[dict] | None:
    """Sum per-plane floor records (bench.floor.PlaneFloor.to_json); None if any is missing."""
    total = PlaneFloor()
    for planes in lists:
        if planes is None:
            return None
        for x in planes:
            total.add(x["dtype"], x["plane"], x["stored_bytes"], x["floor_bytes"], x["logical_bytes"])
    return total.to_json()


def _repeat_sums(series) -> list[float]:
    """Per repeat, the sum over datasets (repeat i of every scheme was taken
    side by side, bench.measure, so the per-repeat totals pair up)."""
    return [round(sum(rs), 4) for rs in zip(*series)]


def summarize(datasets, meta, raw: dict) -> dict:
    """Per dataset and in total, per scheme (from run_scheme's per-version figures)."""
    out_ds = []
    for ds in datasets:
        d = {"name": ds.name, "kind": ds.kind, "source": ds.source, "description": ds.description,
             "logical_bytes": sum(meta[(ds.name, v.id)]["logical_bytes"] for v in ds.versions),
             "versions": [meta[(ds.name, v.id)] for v in ds.versions], "schemes": {}}
        for sname, r in raw.items():
            vrs = [r["versions"].get((ds.name, v.id)) for v in ds.versions]
            errs = [f"{v.id}: {x['error']}" for v, x in zip(ds.versions, vrs) if x and x.get("error")]
            if not all(vrs) or errs or any(x.get("retrieve_s") is None for x in vrs):
                d["schemes"][sname] = {"ok": False, "error": (errs[0] if errs else r.get("error")),
                                       "errors": errs}
                continue
            per_v = []
            for v, x in zip(ds.versions, vrs):
                m = meta[(ds.name, v.id)]
                lb = m["logical_bytes"]
                per_v.append({
                    "id": v.id, "logical_bytes": lb, "physical_added": x["physical_added"],
                    "entropy_floor": x.get("entropy_floor"), "planes": x.get("planes"),
                    "retrieve_s_all": x.get("retrieve_s_all"), "retrieve_peak_bytes": x.get("retrieve_peak_bytes"),
                    "ratio": round(x["physical_added"] / lb, 4) if lb else None,
                    "archive_s": x["archive_s"], "archive_mb_s": mbps(lb, x["archive_s"]),
                    "retrieve_s": x["retrieve_s"], "retrieve_mb_s": mbps(lb, x["retrieve_s"]),
                    "one_tensor": dict(m["one_tensor"], seconds=x["one_tensor_s"],
                                       ratio_to_full=round(x["one_tensor_s"] / x["retrieve_s"], 5)
                                       if x["one_tensor_s"] is not None and x["retrieve_s"] else None),
                    "verified": x["verified"], "verify_errors": x["verify_errors"],
                })
            lb = d["logical_bytes"]
            phys = sum(x["physical_added"] for x in vrs)
            floor = (sum(x["entropy_floor"] for x in vrs)
                     if all(x.get("entropy_floor") is not None for x in vrs) else None)
            planes = _merge_planes(x.get("planes") for x in vrs)
            peaks = [x["retrieve_peak_bytes"] for x in vrs if x.get("retrieve_peak_bytes") is not None]
            spread = [sum(min(x["retrieve_s_all"]) for x in vrs), sum(max(x["retrieve_s_all"]) for x in vrs)]
            # repeat i of every scheme was taken side by side (bench.measure): per-repeat totals pair up
            n_rep = min(len(x["retrieve_s_all"]) for x in vrs)
            per_repeat = [round(sum(x["retrieve_s_all"][i] for x in vrs), 4) for i in range(n_rep)]
            # likewise archive pass i (bench.measure interleaves the passes too)
            n_pass = min((len(x.get("archive_s_all") or []) for x in vrs), default=0)
            per_pass = [round(sum(x["archive_s_all"][i] for x in vrs), 4) for i in range(n_pass)]
            cold = (r.get("cold") or {}).get(ds.name)
            a_s = sum(x["archive_s"] for x in vrs)
            r_s = sum(x["retrieve_s"] for x in vrs)
            one_ratios = [p["one_tensor"]["ratio_to_full"] for p in per_v if p["one_tensor"]["ratio_to_full"] is not None]
            one_s = [p["one_tensor"]["seconds"] for p in per_v if p["one_tensor"]["seconds"] is not None]
            timings = retrieval_timings(ds, meta, per_v, r.get("top_bytes", {}).get(ds.name))
            lin = (r.get("lineage") or {}).get(ds.name) or {}
            d["schemes"][sname] = {
                "lineage_s": lin.get("seconds"), "lineage_mb_s": mbps(lb, lin.get("seconds")),
                "lineage_s_per_repeat": lin.get("seconds_all"), "lineage_verified": lin.get("verified"),
                "lineage_error": lin.get("error"),
                "timings": timings,
                "ok": all(x["verified"] for x in vrs), "logical_bytes": lb, "physical_bytes": phys,
                "entropy_floor": floor, "planes": planes,
                "retrieve_peak_bytes": max(peaks, default=None), "retrieve_s_range": spread,
                "retrieve_s_per_repeat": per_repeat, "archive_pass_s": per_pass,
                "cold_newest_s": cold["seconds"] if cold else None,
                "ratio": round(phys / lb, 4) if lb else None, "factor": round(lb / phys, 3) if phys else None,
                "archive_s": a_s, "archive_mb_s": mbps(lb, a_s),
                "retrieve_s": r_s, "retrieve_mb_s": mbps(lb, r_s),
                "one_tensor_s_median": median(one_s), "one_tensor_ratio_median": median(one_ratios),
                "verified": all(x["verified"] for x in vrs) and lin.get("verified") is not False, "versions": per_v,
            }
        out_ds.append(d)
    total_lb = sum(d["logical_bytes"] for d in out_ds)
    totals = {}
    for sname, r in raw.items():
        if r.get("physical_bytes") is None or not all(sname in d["schemes"] and "ratio" in d["schemes"][sname]
                                                      for d in out_ds):
            totals[sname] = {"ok": False, "error": r.get("error"), "description": r.get("description"),
                             "version_errors": r.get("version_errors"),
                             "traceback": r.get("traceback"), "tracebacks": r.get("tracebacks")}
            continue
        phys = r["physical_bytes"]
        a_s = median(r["archive_pass_s"])
        r_s = sum(d["schemes"][sname]["retrieve_s"] for d in out_ds)
        lins = [d["schemes"][sname].get("lineage_s") for d in out_ds]
        lin_s = sum(lins) if lins and all(x is not None for x in lins) else None
        lin_rep = (_repeat_sums(d["schemes"][sname]["lineage_s_per_repeat"] for d in out_ds)
                   if lin_s is not None else None)
        ratios = [v["one_tensor"]["ratio_to_full"] for d in out_ds for v in d["schemes"][sname]["versions"]
                  if v["one_tensor"]["ratio_to_full"] is not None]
        totals[sname] = {
            "ok": r["ok"], "error": r.get("error"), "label": r["label"], "description": r["description"],
            "logical_bytes": total_lb, "physical_bytes": phys,
            "physical_added_sum": sum(d["schemes"][sname]["physical_bytes"] for d in out_ds),
            "entropy_floor": (sum(d["schemes"][sname]["entropy_floor"] for d in out_ds)
                              if all(d["schemes"][sname].get("entropy_floor") is not None for d in out_ds)
                              else None),
            "planes": _merge_planes(d["schemes"][sname].get("planes") for d in out_ds),
            "archive_peak_bytes": r.get("archive_peak_bytes"),
            "retrieve_peak_bytes": max((d["schemes"][sname]["retrieve_peak_bytes"] for d in out_ds
                                        if d["schemes"][sname].get("retrieve_peak_bytes") is not None), default=None),
            "retrieve_s_range": [sum(d["schemes"][sname]["retrieve_s_range"][i] for d in out_ds) for i in (0, 1)],
            "retrieve_s_per_repeat": _repeat_sums(d["schemes"][sname]["retrieve_s_per_repeat"] for d in out_ds),
            "cold": r.get("cold"),
            "disk_bytes": r.get("disk_bytes"),
            "ratio": round(phys / total_lb, 4) if total_lb else None,
            "factor": round(total_lb / phys, 3) if phys else None,
            "archive_s": a_s, "archive_mb_s": mbps(total_lb, a_s),
            "archive_pass_s": r["archive_pass_s"], "close_s": r.get("close_s"),
            "retrieve_s": r_s, "retrieve_mb_s": mbps(total_lb, r_s),
            "lineage_s": lin_s, "lineage_mb_s": mbps(total_lb, lin_s), "lineage_s_per_repeat": lin_rep,
            "one_tensor_ratio_median": median(ratios),
            "verified": r["ok"],
        }
    return {"datasets": out_ds, "totals": totals}

# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------
def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


#: The headline speed of each per-repeat series (`paired_range`).
_HEADLINE = {"retrieve_s_per_repeat": "retrieve_mb_s", "archive_pass_s": "archive_mb_s",
             "lineage_s_per_repeat": "lineage_mb_s"}


def speed_ratio(p: dict, x: dict, key: str) -> float | None:
    """p's headline MB/s over x's for the per-repeat series ``key`` (None when either is missing)."""
    speed = _HEADLINE[key]
    return p[speed] / x[speed] if p.get(speed) and x.get(speed) else None


def ratio_cell(p: dict, x: dict, key: str, label: str) -> str:
    """" · LABEL 1.23x (lo–hi)": `speed_ratio` and its noise band (`paired_range`); "" without a ratio."""
    ratio = speed_ratio(p, x, key)
    if ratio is None:
        return ""
    band = paired_range(p, x, key)
    return f" · {label} {ratio:.2f}x" + (f" ({band[0]:.2f}–{band[1]:.2f})" if band else "")


def paired_range(p: dict, x: dict, key: str = "retrieve_s_per_repeat") -> tuple[float, float] | None:
    """Lowest and highest of x's / p's all-versions time over the repeats (``key``:
    ``retrieve_s_per_repeat`` or ``archive_pass_s``), each repeat taken side by side
    (bench.measure), so the pair shares the machine's state: the run's noise band.
    The band is widened to hold the headline ratio (p's MB/s over x's): that is
    taken from per-version medians (a version's repeats may number more than the
    whole run's), so it can fall just outside the per-repeat ratios."""
    pairs = [b / a for a, b in zip(p.get(key) or [], x.get(key) or []) if a and b]
    if len(pairs) < 2:
        return None
    speed = _HEADLINE[key]
    if p.get(speed) and x.get(speed):
        pairs.append(p[speed] / x[speed])
    return min(pairs), max(pairs)


def _ok(x: dict | None) -> bool:
    return bool(x) and x.get("ratio") is not None and x.get("retrieve_mb_s")


def answers_md(report: dict) -> list[str]:
    """The questions a reader comes with, per dataset: which scheme is smallest,
    which retrieves fastest, where pas stands against each alternative (ratios
    measured in this run), and how far pas is from its entropy floor."""
    L = ["## Answers", "",
         "Per dataset (and for everything in one store): the smallest scheme, the fastest to retrieve every "
         "version, and pas against each alternative: **size** = alternative's footprint / pas's (above 1: pas "
         "is smaller), **retrieve** (each version on its own), **lineage** (every version of the dataset in "
         "one call, parents first: delta schemes decode each stored version once) and **archive** = pas's "
         "MB/s / the alternative's (above 1: pas is faster; in "
         "brackets the lowest and highest ratio over the repeats or archive passes, each repeat of the two taken "
         "side by side: the run's noise band, which `python -m bench.compare` uses to tell whether two runs "
         "agree). "
         "Floor = pas's footprint / the entropy floor of what it stores.", ""]
    rows = [(d["name"], d["schemes"]) for d in report["datasets"]] + [("**all** (one store)", report["totals"])]
    pas_names = [s for s in report["totals"] if s == "pas"]
    alts = [s for s in report["totals"] if not s.startswith("pas")]
    head = ["dataset", "smallest", "fastest retrieve"] + [f"pas vs {a}" for a in alts] + ["pas floor"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|---|---|---|" + "---:|" * (len(alts) + 1))
    for name, schemes in rows:
        ok = {s: x for s, x in schemes.items() if _ok(x)}
        if not ok:
            continue
        small = min(ok, key=lambda s: ok[s]["physical_bytes"])
        fast = max(ok, key=lambda s: ok[s]["retrieve_mb_s"])
        cells = [name, f"{small} ({ok[small]['physical_bytes'] / MB:.1f} MB)",
                 f"{fast} ({ok[fast]['retrieve_mb_s']:.0f} MB/s)"]
        p = ok.get(pas_names[0]) if pas_names else None
        for a in alts:
            x = ok.get(a)
            if p is None or x is None:
                cells.append("–")
                continue
            cells.append(f"size {x['physical_bytes'] / p['physical_bytes']:.2f}x"
                         + ratio_cell(p, x, "retrieve_s_per_repeat", "retrieve")
                         + ratio_cell(p, x, "lineage_s_per_repeat", "lineage")
                         + ratio_cell(p, x, "archive_pass_s", "archive"))
        floor = p.get("entropy_floor") if p else None
        cells.append(f"{p['physical_bytes'] / floor:.3f}" if floor else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    return L


def resources_md(report: dict) -> list[str]:
    """Peak memory, cold-cache retrieval, timing spread and pas's per-plane floor."""
    L = ["## Memory, cold cache and spread", "",
         "Peak memory = the highest resident set size above the phase's start (sampled every 2 ms), measured "
         "in a process apart, each scheme after a warm-up and with free heap released (bench.memory): archive = "
         "the whole archive pass, retrieve = the worst of each dataset's newest and largest version. Cold = the "
         "newest version of each dataset retrieved once after the page cache was dropped. Range = the sum over "
         "versions of the fastest and "
         "slowest of the retrieve repeats.", ""]
    cold_err = {s: t["cold"]["error"] for s, t in report["totals"].items()
                if isinstance(t.get("cold"), dict) and t["cold"].get("error")}
    names = [d["name"] for d in report["datasets"]]
    L.append("| scheme | archive peak MB | retrieve peak MB | all versions retrieve s (min–max) | cold newest s: "
             + ", ".join(names) + " |")
    L.append("|---|---:|---:|---:|---:|")
    for s, t in report["totals"].items():
        if not t.get("ok") and t.get("ratio") is None:
            continue
        colds = []
        for d in report["datasets"]:
            x = d["schemes"].get(s) or {}
            colds.append(_f(x.get("cold_newest_s"), "{:.3f}"))
        rng = t.get("retrieve_s_range")
        L.append(f"| {s} | {_f(t.get('archive_peak_bytes') / MB if t.get('archive_peak_bytes') is not None else None, '{:.0f}')} "
                 f"| {_f(t.get('retrieve_peak_bytes') / MB if t.get('retrieve_peak_bytes') is not None else None, '{:.0f}')} "
                 f"| {_f(t.get('retrieve_s'), '{:.2f}')} ({_f(rng[0] if rng else None, '{:.2f}')}–"
                 f"{_f(rng[1] if rng else None, '{:.2f}')}) | {', '.join(colds)} |")
    for s, why in cold_err.items():
        L.append(f"\n{s}: {why}")
    L.append("")
    planes = (report["totals"].get("pas") or {}).get("planes")
    if planes:
        L += ["### pas: stored bytes against the entropy floor, by plane", "",
              "All objects pas stored for the whole benchmark, float tensors by dtype and byte plane (0 = the most "
              "significant byte; its content depends on the tensor's layout, docs/format.md §4); per logical byte "
              "of that plane.", "",
              "| dtype | plane | logical MB | stored MB | floor MB | stored / logical | floor / logical | stored / floor |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for x in planes:
            lg, st, fl = x["logical_bytes"], x["stored_bytes"], x["floor_bytes"]
            L.append(f"| {x['dtype']} | {x['plane']} | {lg / MB:.1f} | {st / MB:.1f} | {fl / MB:.1f} | {st / lg:.3f} | "
                     f"{fl / lg:.3f} | {_f(st / fl if fl else None, '{:.3f}')} |")
        L.append("")
    return L


def to_markdown(report: dict) -> str:
    m, cfg = report["machine"], report["config"]
    L = ["# pas core benchmark", ""]
    L.append(f"{report['started']} · {m.get('cpu_model', '?')} · {m['cpus_usable']} usable cores · "
             f"load {_f(m['loadavg_start'][0], '{:.2f}') if m.get('loadavg_start') else '?'} → "
             f"{_f(m['loadavg_end'][0], '{:.2f}') if m.get('loadavg_end') else '?'} · "
             f"{report['elapsed_s']:.0f} s · repeat {cfg['repeat']} (archive {cfg['archive_repeat']}) · "
             f"git {(m.get('git_commit') or '?')[:10]}{' (pas tree dirty)' if m.get('pas_tree_dirty') else ''}")
    L.append("")
    L.append("MB = 1e6 bytes. ratio = physical / logical bytes (logical = source file sizes; lower is better); "
             "archive and retrieve MB/s are logical MB per second (medians); lineage MB/s = every version "
             "of the dataset retrieved in one call, parents first (medians); one tensor = the tensor closest to "
             "5% of the version's bytes (its median share in brackets), time and time / full retrieve of that "
             "version (median over versions). Every retrieved tensor is checked as bytes against the source. "
             "Every archive ends durable (its files and directories fsync'd; pas: a synced write batch), and "
             "the schemes run interleaved, version by version and repeat by repeat.")
    L.append("")
    L.append("## Schemes")
    L.append("")
    for s, t in report["totals"].items():
        L.append(f"- **{s}**: {t.get('description') or t.get('error')}")
    skipped = report.get("skipped_schemes") or {}
    for s, why in skipped.items():
        L.append(f"- **{s}**: skipped ({why})")
    L.append("")
    L.extend(answers_md(report))
    if report.get("plots"):
        L += ["Plots: " + ", ".join(f"[{p}]({p})" for p in report["plots"]) + " (footprint against the time to "
              "retrieve one version with the Pareto front; ingest and retrieve throughput; pas's planes against "
              "their entropy floor).", ""]
    L.extend(resources_md(report))

    def table(rows_of, title):
        L.append(title)
        L.append("")
        L.append("| dataset | scheme | logical MB | physical MB | entropy floor MB | ratio | factor | archive MB/s "
                 "| retrieve MB/s | lineage MB/s | one tensor ms (share) | one / full | bit-exact |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        for name, s, x, share in rows_of:
            if not x.get("ratio") and x.get("ratio") != 0:
                L.append(f"| {name} | {s} | | | | | | | | | | | FAILED: {str(x.get('error'))[:80]} |")
                continue
            one_ms = x.get("one_tensor_s_median")
            floor = x.get("entropy_floor")
            L.append(f"| {name} | {s} | {x['logical_bytes'] / MB:.1f} | {x['physical_bytes'] / MB:.1f} "
                     f"| {_f(floor / MB if floor is not None else None, '{:.1f}')} "
                     f"| {x['ratio']:.3f} | {x['factor']:.2f}x | {_f(x.get('archive_mb_s'), '{:.0f}')} "
                     f"| {_f(x.get('retrieve_mb_s'), '{:.0f}')} | {_f(x.get('lineage_mb_s'), '{:.0f}')} "
                     f"| {_f(one_ms * 1e3 if one_ms is not None else None, '{:.1f}')}"
                     f"{'' if share is None else f' ({share:.1%})'} "
                     f"| {_f(x.get('one_tensor_ratio_median'), '{:.3f}')} | {'yes' if x.get('verified') else 'NO'} |")
        L.append("")

    rows = []
    for d in report["datasets"]:
        shares = [v["one_tensor"]["share"] for v in d["versions"] if v["one_tensor"]["share"] is not None]
        for s, x in d["schemes"].items():
            rows.append((d["name"], s, x, median(shares)))
    table(rows, "## Per dataset")
    tot_rows = [("**all**", s, dict(x, one_tensor_s_median=None), None) for s, x in report["totals"].items()]
    table(tot_rows, "## Total (one store per scheme)")
    L.append("Total physical MB is the whole store (`physical_bytes()`); per dataset it is the sum of what each "
             "archive call added. Entropy floor (pas): the order-0 entropy of every plane stream pas stored, "
             "each chunk and inline plane on its own, given pas's choices of layout, delta and base: the limit "
             "for any per-chunk static byte coder on what pas keeps (records, keys and checks not included).")
    L.append("")
    # the reference figures are for the full shared corpus, not the quick one or a user's folder
    refs = ({s: REFERENCE_MB[s] for s in report["totals"] if s in REFERENCE_MB}
            if not cfg.get("quick") and not cfg.get("data") else {})
    if refs and any(d["name"] in r for d in report["datasets"] for r in refs.values()):
        L.append("## Footprint against the reference figures")
        L.append("")
        L.append("Physical MB measured here / reference MB (compression-facts.md §5, §7; shared corpus only).")
        L.append("")
        cols = list(report["totals"])
        L.append("| dataset | logical MB | " + " | ".join(f"{s} MB (ref)" for s in cols) + " |")
        L.append("|---|---:|" + "---:|" * len(cols))
        for d in report["datasets"] + [{"name": "all", "logical_bytes": None, "schemes": None}]:
            cells = []
            for s in cols:
                if d["schemes"] is None:
                    got = report["totals"][s].get("physical_bytes")
                else:
                    got = d["schemes"].get(s, {}).get("physical_bytes")
                ref = REFERENCE_MB.get(s, {}).get(d["name"])
                cells.append(f"{_f(got / MB if got is not None else None)} ({_f(ref)})")
            lb = d["logical_bytes"] if d["logical_bytes"] is not None else \
                sum(x["logical_bytes"] for x in report["datasets"])
            L.append(f"| {d['name']} | {lb / MB:.1f} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("## Retrieval timings per dataset")
    L.append("")
    L.append("Whole-version retrieve (median of the repeats): the newest version (last in the manifest), a "
             "mid-chain version (the middle of the manifest order) and all versions (sum); depth = versions "
             "from the root to it (root = 1). K planes: the newest version rebuilt from its top K byte planes "
             "only (lossy; checked to lie in each value's exact top-K interval), time and time / full retrieve; "
             "top plane: the newest version's top byte plane itself, decoded (for pas's default planes-exp "
             "layout the exponent byte, whose K=1 value rebuild is 0 as the sign is in plane 1), checked "
             "byte for byte against the source's split.")
    L.append("")
    L.append("| dataset | scheme | newest (depth) | newest s | mid (depth) | mid s | all versions s | all MB/s "
             "| K=1 s (/full) | K=2 s (/full) | top plane s (/full) |")
    L.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for d in report["datasets"]:
        for s, x in d["schemes"].items():
            t = x.get("timings")
            if not t:
                continue
            tb = t.get("top_bytes") or {}

            def kcell(k):
                y = tb.get(str(k)) or tb.get(k)
                if not y:
                    return "–"
                if y.get("seconds") is None:
                    return "FAILED"
                return (f"{y['seconds']:.3f} ({_f(y.get('ratio_to_full'), '{:.2f}')})"
                        + ("" if y.get("top_planes_exact") else " ✗"))
            L.append(f"| {d['name']} | {s} | {t['newest']['id']} ({t['newest']['depth']}) "
                     f"| {t['newest']['seconds']:.3f} | {t['mid']['id']} ({t['mid']['depth']}) "
                     f"| {t['mid']['seconds']:.3f} | {t['all']['seconds']:.3f} | {_f(t['all']['mb_s'], '{:.0f}')} "
                     f"| {kcell(1)} | {kcell(2)} | {kcell('1p')} |")
    L.append("")
    L.append("## Per version")
    L.append("")
    L.append("| dataset | version | parent | MB | " + " | ".join(
        f"{s} ratio | {s} arch MB/s | {s} retr MB/s | {s} 1-tensor ms" for s in report["totals"]) + " |")
    L.append("|---|---|---|---:|" + "---:|" * (4 * len(report["totals"])))
    for d in report["datasets"]:
        for i, v in enumerate(d["versions"]):
            cells = []
            for s in report["totals"]:
                x = d["schemes"].get(s, {})
                pv = x.get("versions", [None] * len(d["versions"]))[i] if x.get("versions") else None
                if pv is None:
                    cells += ["–"] * 4
                else:
                    cells += [f"{pv['ratio']:.3f}" + ("" if pv["verified"] else " ✗"),
                              _f(pv["archive_mb_s"], "{:.0f}"), _f(pv["retrieve_mb_s"], "{:.0f}"),
                              _f(pv["one_tensor"]["seconds"] * 1e3 if pv["one_tensor"]["seconds"] is not None
                                 else None, "{:.1f}")]
            L.append(f"| {d['name']} | {v['id']} | {v['parent'] or ''} | {v['logical_bytes'] / MB:.1f} | "
                     + " | ".join(cells) + " |")
    L.append("")
    L.append("## Datasets")
    L.append("")
    for d in report["datasets"]:
        L.append(f"- **{d['name']}** ({d['kind']}, {len(d['versions'])} versions, {d['logical_bytes'] / MB:.1f} MB"
                 f"{', ' + d['source'] if d['kind'] == 'real' else ''}): {d['description']}")
    L.append("")
    return "\n".join(L)
