"""The planning benchmark of issue 6: the paper's Fig. 6(c) and Table V on our data.

    python -m bench.plan_bench [--quick] [--out DIR] [--work DIR] [--scale S]
                               [--alphas 1,1.6,4] [--repeat 9] [--no-corpus] [--keep]
    python -m bench.plan_bench --corpus-repack [--out DIR] [--work DIR] [--repeat 3]

**Fig. 6(c)** (storage against the budget factor alpha). Each repository is
archived with pas (`Repository.archive`, parents as in the dataset), its
storage graph built by `repo_graph.build` (independent recreation; estimated
bytes, cost-model seconds), and every planner (`mst`, `spt`, `last`, `pas-mt`,
`pas-pt`, `best`) run at every alpha with budgets alpha x each version's cost
in the shortest-path tree, bounded by the repository's ``delta.max_depth`` as
`pas plan` and `pas repack` are. `best` is taken from the `pas-mt` and `pas-pt`
plans by `algorithms.best`'s own rule (feasible first, then least excess, then
least storage), so they are not computed twice. `mst (unbounded)` (no depth
bound) is the least storage any spanning tree can have: the floor.

**Table V** (time to recreate a version, MEASURED). For three plans -- whole
storage (`spt`), least storage (`mst`, depth-bounded) and PAS (`best`) at
alpha = 1.6 -- the repository is copied and re-packed to the plan
(`pas.archive.repack.repack`), then every version is retrieved
(`Repository.retrieve`: full precision, and the top 2 and top 1 byte planes,
``top_bytes=k``), the least of ``--repeat`` runs per version (`measured`;
the median is reported beside it; warm OS cache, threads as the library
chooses). Reported with the physical bytes
(`Repository.physical_bytes`), the model's prediction per version, and each
version's budget (alpha x its SPT cost, model seconds); measured times are also
held against alpha x the MEASURED time of the same version under the SPT plan.

The synthetic SD-shaped dataset (`bench.synthetic`, ``--scale``) is always
run; the shared corpus's lineage-finetune and snapshots-cnn (one repository
each) unless ``--no-corpus``. ``--quick``: scale 0.25 and lineage-finetune's
curves only (Table V on the synthetic repository only).

**Corpus repack** (``--corpus-repack``, instead of the above): the whole
shared corpus in ONE repository, `pas repack --budget 1.6`, every version
bit-exact against its source file and `pas verify` clean (`corpus_repack`;
``corpus-repack.md`` and ``.json``).

Timings (the cost model's calibration, Table V, the corpus retrievals) wait
for a quiet machine before each round (`pas.archive.repo_graph.Quiet`).

Output (``--out``, default ``bench/results/plan``): ``plan.json`` (every
point), ``plan.md`` (the tables) and ``plan-<repository>.png`` (storage vs
alpha, one line per algorithm; mst/spt as horizontal references; infeasible
points marked x). Scratch repositories go to ``--work`` (default: a new
temporary folder, removed at the end unless ``--keep``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench import memory, synthetic
from bench.measure import rotated
from bench.datasets import Dataset, corpus_datasets, corpus_dir
from pas.archive import budgets_for, evaluate, repo_graph
from pas.archive.algorithms import plan as make_plan
from pas.archive.plan import Plan
from pas.archive.repack import repack
from pas.repo import Repository

ALGORITHMS = ("mst", "spt", "last", "pas-mt", "pas-pt", "best")
ALPHAS = (1.0, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0, 4.0)
TABLE5_ALPHA = 1.6
#: Table V's plans: (row key, title, `pas repack --algorithm`, `--margin`,
#: `--refine`). PAS three ways: planned on the cost model alone; 10%
#: under every budget; and refined (5% under every budget, then every version
#: timed in the layout the plan chose, planned and applied again), the
#: configuration the Done-when is judged on.
TABLE5_PLANS = (("spt", "whole storage (SPT)", "spt", 0.0, False),
                ("mst", "least storage (MST, depth-bounded)", "mst", 0.0, False),
                ("best", "PAS (best), cost model only", "best", 0.0, False),
                ("best-margin", "PAS (best), cost model only, margin 10%", "best", 0.10, False),
                ("best-refined", "PAS (best), margin 5%, refined on measured versions", "best", 0.05, True))
PAS_ROW = "best-refined"
PRECISIONS = (("full", None), ("top 2 bytes", 2), ("top 1 byte", 1))
CORPUS_LINEAGES = ("lineage-finetune", "snapshots-cnn")
FULL_SCALE, QUICK_SCALE = 0.4, 0.25
MODEL = "independent"
MB = 1e6
#: Most seconds a timing series (Table V, the corpus retrievals) waits, in all, for a quiet
#: machine before its rounds; the calibration waits a fifth of it.
QUIET_SECONDS = 600.0


# ------------------------------------------------------------------ helpers
def _commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=False).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _log(msg: str) -> None:
    print(f"[plan_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fin(x: float):
    return None if x is None or math.isinf(x) else x


# ------------------------------------------------------------------ archive
def archive_dataset(ds: Dataset, path: Path, quiet_seconds: float | None = None) -> dict:
    """Archive every version of ``ds`` (parents first) into a new repository at
    ``path``; calibrate the cost model once (`.pas/costs.json`, reused by copies),
    waiting up to ``quiet_seconds`` in all for a quiet machine (default
    `QUIET_SECONDS`)."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ids: dict[str, str] = {}
    logical = 0
    with Repository.init(path) as repo:
        for v in ds.versions:
            res = repo.archive(str(v.path), name=v.id, parent=ids.get(v.parent) if v.parent else None)
            ids[v.id] = res.version_id
            logical += int(res.logical_bytes)
        archive_s = time.perf_counter() - t0
        costs = _calibrate(repo, quiet_seconds)
        physical = repo.physical_bytes()
    return {"dataset": ds.name, "versions": len(ds.versions), "logical_bytes": logical,
            "physical_bytes": physical, "archive_seconds": archive_s, "cost_model": costs.to_json()}


def _calibrate(repo, quiet_seconds: float | None = None):
    """The cost model measured now (waiting longer for a quiet machine than
    `pas plan` does: a fifth of ``quiet_seconds``), saved to `.pas/costs.json`
    for the copies to reuse."""
    costs = repo_graph.calibrate(repo, quiet_seconds=(QUIET_SECONDS if quiet_seconds is None else quiet_seconds) / 5)
    repo_graph.save_costs(repo, costs)
    return costs


# ------------------------------------------------------------------ Fig. 6(c)
def _pick_best(g, pm: Plan, pp: Plan, budgets) -> tuple[Plan, object]:
    """`algorithms.best`'s rule on the two plans already made."""
    evs = [evaluate(g, p, budgets, MODEL) for p in (pm, pp)]
    i = min(range(2), key=lambda i: (not evs[i].feasible, evs[i].excess, evs[i].storage))
    return Plan(f"best ({(pm, pp)[i].algorithm})", (pm, pp)[i].parents), evs[i]


def _point(alpha, name, ev, seconds, plan_name=None) -> dict:
    ratios = [c / ev.budgets[s] for s, c in ev.recreation.items() if ev.budgets[s] > 0]
    return {"alpha": alpha, "algorithm": name, "plan": plan_name or name, "storage": ev.storage,
            "feasible": ev.feasible, "excess_seconds": ev.excess,
            "mean_recreation": statistics.fmean(ev.recreation.values()),
            "max_recreation": max(ev.recreation.values()),
            "max_over_budget": max(ratios) if ratios else None, "seconds": seconds}


def curves(path: Path, alphas) -> dict:
    """Every algorithm at every alpha on the storage graph of the repository at ``path``."""
    with Repository.open(path) as repo:
        rg = repo_graph.build(repo, MODEL)
    g, depth = rg.graph, rg.max_depth
    none = {s: math.inf for s in g.snapshots}
    t = time.perf_counter()
    floor = evaluate(g, make_plan(g, "mst", none, MODEL, max_depth=None), none, MODEL)
    refs = {"mst_unbounded": {"storage": floor.storage, "seconds": time.perf_counter() - t,
                              "max_recreation": max(floor.recreation.values())}}
    cur = evaluate(g, rg.current, none, MODEL)
    refs["current"] = {"storage": cur.storage, "mean_recreation": statistics.fmean(cur.recreation.values()),
                       "max_recreation": max(cur.recreation.values())}
    points = []
    fixed = {}                       # mst and spt ignore the budgets: planned once
    for name in ("mst", "spt"):
        t = time.perf_counter()
        fixed[name] = (make_plan(g, name, none, MODEL, max_depth=depth), time.perf_counter() - t)
    for alpha in alphas:
        budgets = budgets_for(g, MODEL, alpha)
        plans = {}
        for name in ALGORITHMS[:-1]:
            t = time.perf_counter()
            p, sec = fixed[name] if name in fixed else (make_plan(g, name, budgets, MODEL, max_depth=depth), 0)
            sec = sec or time.perf_counter() - t
            plans[name] = (p, sec)
            points.append(_point(alpha, name, evaluate(g, p, budgets, MODEL), sec))
        t = time.perf_counter()
        pb, evb = _pick_best(g, plans["pas-mt"][0], plans["pas-pt"][0], budgets)
        points.append(_point(alpha, "best", evb, plans["pas-mt"][1] + plans["pas-pt"][1] + time.perf_counter() - t,
                             pb.algorithm))
        cur_ev = evaluate(g, rg.current, budgets, MODEL)
        refs.setdefault("current_feasible", {})[str(alpha)] = cur_ev.feasible
    return {"graph": {"matrices": len(g.matrices), "arcs": len(g.arcs), "snapshots": len(g.snapshots),
                      "directed": g.directed, "max_depth": depth, "build_seconds": rg.seconds},
            "references": refs, "points": points}


# ------------------------------------------------------------------ Table V
def _version_labels(repo, labels) -> dict[str, str]:
    """Graph snapshot label (REF@SHORTID) -> version id (hex)."""
    ids = [v.id.hex() if isinstance(v.id, bytes) else str(v.id) for v in repo.versions()]
    out = {}
    for lab in labels:
        short = lab.rsplit("@", 1)[-1]
        match = [i for i in ids if i.startswith(short)]
        if len(match) != 1:
            raise RuntimeError(f"cannot map snapshot {lab!r} to one version ({len(match)} match)")
        out[lab] = match[0]
    return out


def time_retrievals(paths: dict[str, Path], labels, repeat: int, quiet_seconds: float | None = None) -> dict:
    """{plan: {precision: {label: [seconds, ...]}}}: every version of every
    repository in ``paths`` (copies of one repository, one per plan) retrieved
    ``repeat`` times, interleaved: per round, per version, per precision, one
    retrieval from each copy in turn, the copy that goes first rotating. A slow spell of the (shared) machine then
    falls on every plan alike, so the plans compare fairly, and no version is
    retrieved twice in a row (a retrieval never finds its data in the CPU caches
    because it was just read). Full precision, and the top 2 and top 1 bytes.
    Each version's round waits for a quiet machine (`repo_graph.Quiet`, as the
    cost model's calibration does): the times are of this machine unloaded."""
    runs = {name: {p: {lab: [] for lab in labels} for p, _ in PRECISIONS} for name in paths}
    quiet = repo_graph.Quiet(max_wait=QUIET_SECONDS if quiet_seconds is None else quiet_seconds, every=0.0)
    repos = {name: Repository.open(path) for name, path in paths.items()}
    try:
        ids = {name: _version_labels(repo, labels) for name, repo in repos.items()}
        for name, repo in repos.items():               # warm-up: first-call costs of each handle
            repo.retrieve(ids[name][labels[0]])
        names = list(repos)
        for rnd in range(repeat):
            for j, lab in enumerate(labels):
                quiet.gate()
                # The copy timed first after the gate's sleep runs slower (measured:
                # the SPT copy, always first, 10-15% over its model against the
                # others'), so the first slot rotates over the copies.
                for pname, k in PRECISIONS:
                    for name in rotated(names, rnd + j):
                        repo = repos[name]
                        t = time.perf_counter()
                        snap = repo.retrieve(ids[name][lab], top_bytes=k)
                        runs[name][pname][lab].append(time.perf_counter() - t)
                        del snap
    finally:
        for repo in repos.values():
            repo.close()
    time_retrievals.waited = quiet.waited
    return runs


def measured(samples: list[float]) -> float:
    """One version's measured time from its repeated retrievals: the least.
    Interference on a shared machine only ever adds time, so the fastest of the
    interleaved repeats is the best estimate of what the layout itself costs
    (as `timeit` advises); the median is reported beside it."""
    return min(samples)


#: Measured times are held against the budgets as they are, and with this
#: tolerance for timing noise (the shared 2-CPU VM: repeated runs of the same
#: retrieval differ by 10-30 %): "within budget +10 %".
MEASURED_TOLERANCE = 0.10


def table5(path: Path, work: Path, alpha: float, repeat: int, quiet_seconds: float | None = None) -> dict:
    """Copy the repository once per Table V plan, repack each copy to its plan,
    then time every version of every copy, interleaved (`time_retrievals`).

    Budgets are alpha x each version's modelled SPT cost: the cost model's time
    to retrieve the whole version (`Repository.retrieve`), fixed overhead
    included, as measured times are."""
    rows, dsts, results = [], {}, {}
    try:
        for key, title, alg, margin, refine in TABLE5_PLANS:
            dst = work / f"{path.name}--{key}"
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(path, dst)
            dsts[key] = dst
            t = time.perf_counter()
            with Repository.open(dst, write=True) as repo:
                res = repack(repo, algorithm=alg, alpha=alpha, model=MODEL, margin=margin, refine=refine)
            results[key] = (res, time.perf_counter() - t)
        labels = sorted(results[TABLE5_PLANS[0][0]][0].recreation)
        times = time_retrievals(dsts, labels, repeat, quiet_seconds)
        # The machine's state drifts between the calibration (before planning) and
        # these measurements; the cost model calibrated again now, on the same
        # repository, gives each copy's modelled times in the measurements' window.
        with Repository.open(path) as repo:
            now = repo_graph.calibrate(repo, quiet_seconds=(QUIET_SECONDS if quiet_seconds is None
                                                            else quiet_seconds) / 5)
        modelled_now = {}
        for alg, dst in dsts.items():
            with Repository.open(dst) as repo:
                rg = repo_graph.build(repo, MODEL, costs=now, measure=False)
            modelled_now[alg] = evaluate(rg.graph, rg.current, {}, MODEL).recreation
    finally:
        for dst in dsts.values():
            shutil.rmtree(dst, ignore_errors=True)
    for key, title, *_ in TABLE5_PLANS:
        res, rsec = results[key]
        tm = {p: {lab: measured(v) for lab, v in per.items()} for p, per in times[key].items()}
        per = {lab: {"budget": _fin(res.recreation[lab]["budget"]), "modelled": res.recreation[lab]["after"],
                     "modelled_now": modelled_now[key][lab],
                     "budget_now": alpha * modelled_now[TABLE5_PLANS[0][0]][lab],
                     **{f"measured_{p}": tm[p][lab] for p, _ in PRECISIONS},
                     "measured_full_median": statistics.median(times[key]["full"][lab]),
                     **({"version_factor": res.version_factors.get(lab)} if res.version_factors else {})}
               for lab in labels}
        rows.append({"plan": key, "title": title, "algorithm": res.algorithm, "alpha": alpha,
                     "physical_bytes": res.physical_after, "physical_before": res.physical_before,
                     "estimated_storage": res.storage["after"], "feasible_modelled": res.feasible["after"],
                     "deepest_chain": res.depth["after"], "tensors": res.tensors, "repack_seconds": rsec,
                     "mean_modelled": statistics.fmean(v["modelled"] for v in per.values()),
                     **{f"mean_measured_{p}": statistics.fmean(tm[p].values()) for p, _ in PRECISIONS},
                     "median_measured_over_modelled": statistics.median(v["measured_full"] / v["modelled"]
                                                                        for v in per.values() if v["modelled"] > 0),
                     "median_measured_over_modelled_now": statistics.median(
                         v["measured_full"] / v["modelled_now"] for v in per.values() if v["modelled_now"] > 0),
                     "versions_within_budget_now": sum(v["measured_full"] <= v["budget_now"] for v in per.values()),
                     "versions_within_budget_now_tolerance": sum(
                         v["measured_full"] <= v["budget_now"] * (1 + MEASURED_TOLERANCE) for v in per.values()),
                     "versions": per})
    # Measured budgets (what the Done-when is judged on): alpha x the version's
    # measured time under the SPT plan, same run, interleaved, the least of the
    # repeats on both sides. A slowness of one version hits every copy alike: in
    # one run seven versions measured 1.1-1.5 x slower than the rest under every plan
    # (per-version times correlating at 0.77-0.90 across the copies), and only a
    # budget measured in the same run follows it. Run budgets, reported beside:
    # alpha x the version's modelled SPT time at the machine's speed in this run
    # (the SPT copy's median measured / modelled time), which a noisy SPT time
    # cannot move; they were judged on while one version's SPT time was mostly
    # noise (median of 5, small tensors decoded on the pool: 0.74-1.27 x the
    # mean of versions that cost the same by construction; the least of 9 with
    # them decoded on the calling thread: 0.88-1.25 x, mostly 0.91-1.11 x).
    spt_row = rows[0]
    speed = statistics.median(v["measured_full"] / v["modelled"] for v in spt_row["versions"].values()
                              if v["modelled"] > 0)
    for row in rows:
        vs = row["versions"]
        for lab, v in vs.items():
            spt_v = spt_row["versions"][lab]
            v["measured_budget"] = alpha * spt_v["measured_full"]
            v["run_budget"] = alpha * spt_v["modelled"] * speed
            v["within_budget"] = v["budget"] is None or v["measured_full"] <= v["budget"]
            v["within_budget_tolerance"] = (v["budget"] is None
                                            or v["measured_full"] <= v["budget"] * (1 + MEASURED_TOLERANCE))
            v["within_measured_budget"] = v["measured_full"] <= v["measured_budget"]
            v["within_run_budget"] = v["measured_full"] <= v["run_budget"]
            v["within_run_budget_median"] = v["measured_full_median"] <= v["run_budget"]
        for what in ("budget", "budget_tolerance", "measured_budget", "run_budget", "run_budget_median"):
            row[f"versions_within_{what}"] = sum(v[f"within_{what}"] for v in vs.values())
        row["worst_measured_over_budget"] = max(v["measured_full"] / v["budget"] for v in vs.values() if v["budget"])
        row["worst_measured_over_measured_budget"] = max(v["measured_full"] / v["measured_budget"] for v in vs.values())
        row["worst_measured_over_run_budget"] = max(v["measured_full"] / v["run_budget"] for v in vs.values())
    return {"alpha": alpha, "repeat": repeat, "tolerance": MEASURED_TOLERANCE, "cost_model_now": now.to_json(),
            "quiet_wait_seconds": getattr(time_retrievals, "waited", None), "run_speed": speed, "rows": rows}


def done_when(rep: dict) -> dict:
    """Issue 6's Done-when on one repository: at alpha 1.6, storage within 10% of
    the MST, every version within budget by the model and by measurement:
    measured whole-version retrieval (`measured`: the least of the repeats)
    within its measured budget (alpha x the same version's measured SPT time,
    same run, interleaved; `table5`), strictly. Also reported: against the run
    budgets, against alpha x the modelled SPT time (strict and within
    ``MEASURED_TOLERANCE``)."""
    t5 = rep["table5"]
    rows = {r["plan"]: r for r in t5["rows"]}
    pas, mst, spt = rows[PAS_ROW], rows["mst"], rows["spt"]
    floor = rep["curves"]["references"]["mst_unbounded"]["storage"]
    n = len(pas["versions"])
    out = {"alpha": t5["alpha"], "tolerance": t5.get("tolerance", MEASURED_TOLERANCE),
           "physical_over_mst": pas["physical_bytes"] / mst["physical_bytes"],
           "estimated_over_mst_bounded": pas["estimated_storage"] / mst["estimated_storage"],
           "estimated_over_mst_unbounded": pas["estimated_storage"] / floor,
           "feasible_modelled": pas["feasible_modelled"],
           "versions": n, "within_budget_measured": pas["versions_within_budget"],
           "within_budget_tolerance": pas.get("versions_within_budget_tolerance", pas["versions_within_budget"]),
           "within_measured_budget": pas["versions_within_measured_budget"],
           "worst_over_measured_budget": pas["worst_measured_over_measured_budget"],
           "worst_measured_over_budget": pas["worst_measured_over_budget"],
           "within_run_budget": pas["versions_within_run_budget"],
           "worst_over_run_budget": pas["worst_measured_over_run_budget"], "run_speed": t5["run_speed"],
           "measured_over_modelled": {r["plan"]: r.get("median_measured_over_modelled") for r in t5["rows"]},
           "spt_within_budget_tolerance": spt.get("versions_within_budget_tolerance"),
           "within_budget_now": pas.get("versions_within_budget_now"),
           "within_budget_now_tolerance": pas.get("versions_within_budget_now_tolerance"),
           "measured_over_modelled_now": {r["plan"]: r.get("median_measured_over_modelled_now")
                                          for r in t5["rows"]}}
    if "best" in rows and PAS_ROW != "best":          # the same planner on the cost model alone
        b = rows["best"]
        out["model_only"] = {"physical_over_mst": b["physical_bytes"] / mst["physical_bytes"],
                             "within_measured_budget": b["versions_within_measured_budget"],
                             "worst_over_measured_budget": b["worst_measured_over_measured_budget"],
                             "within_run_budget": b["versions_within_run_budget"],
                             "worst_over_run_budget": b["worst_measured_over_run_budget"],
                             "within_budget_measured": b["versions_within_budget"],
                             "within_budget_tolerance": b["versions_within_budget_tolerance"],
                             "worst_measured_over_budget": b["worst_measured_over_budget"]}
    out["storage_ok"] = out["physical_over_mst"] <= 1.10       # against the MST the repository can store
    out["met"] = bool(out["storage_ok"] and out["feasible_modelled"] and out["within_measured_budget"] == n)
    return out


# ------------------------------------------------------------------ report
def _mb(x) -> str:
    return "-" if x is None else f"{x / MB:.2f}"


def _ms(x) -> str:
    return "-" if x is None else f"{1e3 * x:.1f}"


def markdown(res: dict) -> str:
    s = res["setup"]
    L = ["# Storage planning benchmark (Fig. 6(c), Table V)", "",
         f"`python -m bench.plan_bench{' --quick' if s['quick'] else ''}`, {s['when']}, commit {s['commit']}, "
         f"host {s['host']}; recreation model: {MODEL}; storage: estimated bytes of the storage graph (MB = 10^6 B) "
         f"unless marked physical; recreation: cost-model seconds unless marked measured.", ""]
    for name, rep in res["repositories"].items():
        a, c = rep["archive"], rep["curves"]
        gr, refs, cm = c["graph"], c["references"], rep["archive"]["cost_model"]
        L += [f"## {name}", "",
              f"{a['versions']} versions, {a['logical_bytes'] / MB:.1f} MB logical, archived in "
              f"{a['archive_seconds']:.1f} s to {a['physical_bytes'] / MB:.2f} MB physical. Storage graph: "
              f"{gr['matrices']} matrices, {gr['arcs']} arcs, {'directed' if gr['directed'] else 'two-way'}, "
              f"built in {gr['build_seconds']:.1f} s; delta.max_depth {gr['max_depth']}. Cost model: per version "
              f"{1e3 * a['cost_model'].get('version', 0):.2f} ms + {1e6 * a['cost_model'].get('tensor', 0):.0f} us "
              f"per entry; per level a = {1e6 * a['cost_model']['a']:.0f} us, b = {1e9 * a['cost_model']['b']:.3f} "
              f"ns/B, c = {1e9 * a['cost_model']['c']:.2f} ns/element, and for a delta level {1e6 * cm.get('delta_a', 0):.0f}"
              f" us, {1e9 * cm.get('delta_b', 0):.3f} ns/B, {1e9 * cm.get('delta_c', 0):.2f} ns/element "
              f"(decode scale {a['cost_model'].get('scale', 1):.2f}; fit error "
              f"{100 * a['cost_model'].get('residual', 0):.0f}% rms over "
              f"{a['cost_model'].get('version_samples', 0)} timed retrievals).", "",
              f"References: MST without depth bound (the floor) {_mb(refs['mst_unbounded']['storage'])} MB; "
              f"the writer's own layout {_mb(refs['current']['storage'])} MB (mean recreation "
              f"{_ms(refs['current']['mean_recreation'])} ms, feasible at alpha "
              f"{', '.join(k for k, v in refs['current_feasible'].items() if v) or 'none'}).", "",
              "### Fig. 6(c): storage (MB) against alpha (x: over some budget)", "",
              "| alpha | " + " | ".join(ALGORITHMS) + " | best is |",
              "|---|" + "---|" * (len(ALGORITHMS) + 1)]
        by = {(p["alpha"], p["algorithm"]): p for p in c["points"]}
        for alpha in sorted({p["alpha"] for p in c["points"]}):
            cells = []
            for alg in ALGORITHMS:
                p = by[(alpha, alg)]
                cells.append(_mb(p["storage"]) + ("" if p["feasible"] else " x"))
            L.append(f"| {alpha:g} | " + " | ".join(cells) + f" | {by[(alpha, 'best')]['plan'][6:-1]} |")
        secs = {alg: statistics.fmean(p["seconds"] for p in c["points"] if p["algorithm"] == alg) for alg in ALGORITHMS}
        L += ["", "Planning time per alpha (s): " + ", ".join(f"{k} {v:.2f}" for k, v in secs.items()) + ".", ""]
        if "table5" not in rep:
            continue
        t5 = rep["table5"]
        L += [f"### Table V: time to recreate a version, alpha = {t5['alpha']:g} (measured: least of "
              f"{t5['repeat']} per version, then the mean over versions)", "",
              "| plan | physical MB | estimated MB | deepest chain | modelled full (ms) | measured full (ms) | "
              "measured / modelled (median) | measured top 2 bytes (ms) | measured top 1 byte (ms) | "
              "within budget: model / measured / measured +10% | repack (s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in t5["rows"]:
            n = len(r["versions"])
            L.append(f"| {r['title']} [{r['algorithm']}] | {_mb(r['physical_bytes'])} | {_mb(r['estimated_storage'])} | "
                     f"{r['deepest_chain']} | {_ms(r['mean_modelled'])} | {_ms(r['mean_measured_full'])} | "
                     f"{r.get('median_measured_over_modelled', float('nan')):.2f} | "
                     f"{_ms(r['mean_measured_top 2 bytes'])} | {_ms(r['mean_measured_top 1 byte'])} | "
                     f"{'yes' if r['feasible_modelled'] else 'no'} / {r['versions_within_budget']} / "
                     f"{r.get('versions_within_budget_tolerance', '-')} of {n} | {r['repack_seconds']:.1f} |")
        dw = rep["done_when"]
        tol = 100 * dw.get("tolerance", MEASURED_TOLERANCE)
        pas_title = next(r["title"] for r in t5["rows"] if r["plan"] == PAS_ROW)
        L += ["", f"**Done-when (alpha = {dw['alpha']:g})**: PAS ({pas_title}) physical storage = "
              f"{dw['physical_over_mst']:.3f} x the depth-bounded MST's (estimated: {dw['estimated_over_mst_bounded']:.3f}"
              f" x; {dw['estimated_over_mst_unbounded']:.3f} x the unbounded MST floor); every version within budget "
              f"by the model: {'yes' if dw['feasible_modelled'] else 'NO'}; measured (whole-version retrieval, least "
              f"of {t5['repeat']}) within alpha x the same version's measured SPT time (same run, interleaved): "
              f"{dw['within_measured_budget']} of {dw['versions']} (worst {dw['worst_over_measured_budget']:.2f} x). "
              f"**{'Met' if dw['met'] else 'NOT met'}.** Also: within its run budget (alpha x its modelled SPT time x "
              f"{dw['run_speed']:.2f}, the SPT copy's median measured / modelled time in this run) "
              f"{dw['within_run_budget']} of {dw['versions']} (worst {dw['worst_over_run_budget']:.2f} x); within alpha "
              f"x the modelled SPT time {dw['within_budget_measured']} of {dw['versions']}, within it +{tol:.0f}% "
              f"{dw.get('within_budget_tolerance', '-')} (worst {dw.get('worst_measured_over_budget', float('nan')):.2f}"
              f" x)."
              + (f" PAS planned on the cost model alone, no margin: {mo['physical_over_mst']:.3f} x the MST's storage, "
                 f"{mo['within_measured_budget']} of {dw['versions']} within the measured budget (worst "
                 f"{mo['worst_over_measured_budget']:.2f} x), {mo['within_run_budget']} within the run budget."
                 if (mo := dw.get("model_only")) else ""), "",
              "The cost model calibrated again right after the measurements (the machine's state drifts): "
              "measured / modelled (median) " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          (dw.get("measured_over_modelled_now") or {}).items())
              + " (at planning: " + ", ".join(f"{k} {v:.2f}" for k, v in dw["measured_over_modelled"].items())
              + f"); PAS within alpha x the SPT's time by that model: {dw.get('within_budget_now')} of "
              f"{dw['versions']}, within +{tol:.0f}%: {dw.get('within_budget_now_tolerance')} of {dw['versions']}.", ""]
        pas = next(r for r in t5["rows"] if r["plan"] == PAS_ROW)
        spt = next(r for r in t5["rows"] if r["plan"] == "spt")
        L += ["Per version (ms; budget = alpha x the modelled SPT retrieval time; run budget = that x the run's "
              "speed; measured budget = alpha x the version's measured SPT time, same run):", "",
              "| version | budget | SPT modelled | SPT measured | PAS modelled | PAS measured | PAS measured / budget | "
              "PAS measured / run budget | measured budget | PAS measured / measured budget |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for lab, v in pas["versions"].items():
            sv = spt["versions"][lab]
            L.append(f"| {lab} | {_ms(v['budget'])} | {_ms(sv['modelled'])} | {_ms(sv['measured_full'])} | "
                     f"{_ms(v['modelled'])} | {_ms(v['measured_full'])} | "
                     + (f"{v['measured_full'] / v['budget']:.2f}" if v["budget"] else "-")
                     + f" | {v['measured_full'] / v['run_budget']:.2f}"
                     + f" | {_ms(v['measured_budget'])} | {v['measured_full'] / v['measured_budget']:.2f} |")
        L.append("")
    return "\n".join(L)


def plot(name: str, rep: dict, path: Path) -> Path | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        _log(f"no plot ({e})")
        return None
    c = rep["curves"]
    fig = Figure(figsize=(7.5, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    style = {"last": ("tab:green", "s"), "pas-mt": ("tab:blue", "o"), "pas-pt": ("tab:orange", "^"),
             "best": ("black", ".")}
    for alg in ALGORITHMS:
        pts = sorted((p for p in c["points"] if p["algorithm"] == alg), key=lambda p: p["alpha"])
        xs, ys = [p["alpha"] for p in pts], [p["storage"] / MB for p in pts]
        if alg in ("mst", "spt"):
            col = "tab:red" if alg == "mst" else "tab:purple"
            ax.axhline(ys[0], color=col, ls="--", lw=1, label=f"{alg} ({ys[0]:.1f} MB)")
            bad = [(x, y) for x, y, p in zip(xs, ys, pts) if not p["feasible"]]
            if bad and alg == "mst":
                ax.plot(*zip(*bad), "x", color=col, ms=7)
            continue
        col, mk = style[alg]
        best = alg == "best"                        # dashed over the planner it picked
        ax.plot(xs, ys, marker=mk, color=col, lw=1.2 if best else 2.4, ls="--" if best else "-",
                ms=6, label=alg + (" (the cheaper feasible of the two)" if best else ""),
                zorder=3 if best else 2, alpha=0.9)
        bad = [(x, y) for x, y, p in zip(xs, ys, pts) if not p["feasible"]]
        if bad:
            ax.plot(*zip(*bad), "x", color="red", ms=9, mew=2, zorder=4)
    floor = c["references"]["mst_unbounded"]["storage"] / MB
    ax.axhline(floor, color="grey", ls=":", lw=1, label=f"mst, no depth bound ({floor:.1f} MB)")
    ax.plot([], [], "x", color="red", ms=8, mew=2, label="over some budget")
    ax.set_xlabel("budget factor alpha (x each version's SPT recreation cost)")
    ax.set_ylabel("storage (MB, estimated)")
    ax.set_title(f"{name}: storage vs recreation budget (Fig. 6(c))", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ------------------------------------------------------------------ the whole corpus, repacked
def _source_digests(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, SHA-256 of its bytes) of every tensor of a weight file (bench.tensorio)."""
    from bench import tensorio
    return {name: (tuple(int(s) for s in a.shape),
                   hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest())
            for name, a in tensorio.load(path).items()}


def check_bit_exact(repo, versions: dict[str, str], sources: dict[str, Path]) -> dict:
    """Every version retrieved and compared with its source file, tensor by
    tensor, as bytes (SHA-256 of the raw bytes and the shape; never float ==)."""
    bad: list[str] = []
    tensors = 0
    for label, vid in versions.items():
        want = _source_digests(sources[label])
        snap = repo.retrieve(vid)
        got = {name: (tuple(t.shape), hashlib.sha256(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8))
                      .hexdigest()) for name, t in snap.tensors.items()}
        del snap
        if set(got) != set(want):
            bad.append(f"{label}: tensor names differ ({len(set(got) ^ set(want))} names)")
        bad += [f"{label}: {name} differs" for name in sorted(set(got) & set(want)) if got[name] != want[name]]
        tensors += len(got)
    return {"versions": len(versions), "tensors": tensors, "bit_exact": not bad, "mismatches": bad[:20]}


def _timed_cli(args: list[str], repo: Path) -> dict:
    """Run ``pas ARGS`` on ``repo`` under /usr/bin/time -v: exit code, wall seconds, peak RSS, stdout."""
    pas_bin = str(Path(sys.executable).with_name("pas"))
    cmd = [pas_bin, "--repo", str(repo), "--quiet", *args]
    timed = Path("/usr/bin/time").exists()
    t = time.perf_counter()
    r = subprocess.run((["/usr/bin/time", "-v"] if timed else []) + cmd, capture_output=True, text=True, check=False)
    out = {"command": "pas " + " ".join(args), "exit_code": r.returncode, "seconds": time.perf_counter() - t,
           "stdout": r.stdout, "stderr_tail": r.stderr[-2000:]}
    for line in r.stderr.splitlines():
        if "Maximum resident set size" in line:
            out["peak_rss_bytes"] = int(line.rsplit(":", 1)[1]) * 1024
    return out


def corpus_repack(corpus: list[Dataset], work: Path, out: Path, alpha: float = TABLE5_ALPHA,
                  repeat: int = 3, quiet_seconds: float | None = None, repack_args: tuple = ()) -> dict:
    """Issue 6's third Done-when: the whole shared corpus archived into ONE
    repository (every lineage; each version against its parent, as the corpus
    manifest says; refs ``LINEAGE/VERSION``), then ``pas repack --budget ALPHA``
    (the CLI, under ``/usr/bin/time -v``: wall time and peak RSS), then every
    version compared with its source file as bytes and ``pas verify``. Records
    the footprint (physical bytes of keys and values, and bytes on disk)
    before and after, and every version's retrieval time before and after
    (median of ``repeat``, interleaved, on a quiet machine)."""
    path = work / "corpus-all"
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"alpha": alpha, "repeat": repeat, "lineages": [d.name for d in corpus]}
    versions: dict[str, str] = {}
    sources: dict[str, Path] = {}
    t0 = time.perf_counter()
    logical = 0
    with Repository.init(path) as repo:
        for ds in corpus:
            ids: dict[str, str] = {}
            for v in ds.versions:
                label = f"{ds.name}/{v.id}"
                r = repo.archive(str(v.path), name=label, parent=ids.get(v.parent) if v.parent else None)
                ids[v.id] = versions[label] = r.version_id
                sources[label] = v.path
                logical += int(r.logical_bytes)
        res["archive_seconds"] = time.perf_counter() - t0
        res["logical_bytes"] = logical
        t = time.perf_counter()
        costs = _calibrate(repo, quiet_seconds)
        res["calibrate_seconds"] = time.perf_counter() - t
        res["cost_model"] = costs.to_json()
        res["physical_before"] = repo.physical_bytes()
        res["disk_before"] = repo.store.size_on_disk()
    _log(f"corpus: {len(versions)} versions archived in {res['archive_seconds']:.0f} s; timing retrievals")
    res["retrieve_before"] = _time_versions(path, versions, repeat, quiet_seconds)
    _log("corpus: pas repack")
    rp = _timed_cli(["repack", "--budget", str(alpha), *repack_args, "--json"], path)
    try:
        rp["result"] = json.loads(rp.pop("stdout"))
    except ValueError:
        rp["result"] = None
    res["repack"] = rp
    vf = _timed_cli(["verify", "--json"], path)
    try:
        vf["result"] = json.loads(vf.pop("stdout"))
    except ValueError:
        vf["result"] = None
    res["verify"] = vf
    with Repository.open(path) as repo:
        res["physical_after"] = repo.physical_bytes()
        res["disk_after"] = repo.store.size_on_disk()
        _log("corpus: checking every version against its source file, as bytes")
        res["bit_exact"] = check_bit_exact(repo, versions, sources)
    res["retrieve_after"] = _time_versions(path, versions, repeat, quiet_seconds)
    res["ok"] = bool(rp["exit_code"] == 0 and vf["exit_code"] == 0 and res["bit_exact"]["bit_exact"])
    shutil.rmtree(path, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus-repack.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "corpus-repack.md").write_text(corpus_markdown(res))
    return res


def _time_versions(path: Path, versions: dict[str, str], repeat: int,
                   quiet_seconds: float | None = None) -> dict[str, float]:
    """label -> median seconds of `Repository.retrieve` (round robin, each round on a quiet machine)."""
    runs: dict[str, list[float]] = {lab: [] for lab in versions}
    quiet = repo_graph.Quiet(max_wait=QUIET_SECONDS if quiet_seconds is None else quiet_seconds, every=0.0)
    with Repository.open(path) as repo:
        repo.retrieve(next(iter(versions.values())))                  # warm-up
        for _ in range(repeat):
            for lab, vid in versions.items():
                quiet.gate()
                t = time.perf_counter()
                snap = repo.retrieve(vid)
                runs[lab].append(time.perf_counter() - t)
                del snap
    return {lab: statistics.median(v) for lab, v in runs.items()}


def corpus_markdown(res: dict) -> str:
    rp, vf = res["repack"], res["verify"]
    r = rp.get("result") or {}
    before, after = res["retrieve_before"], res["retrieve_after"]
    L = ["# `pas repack` on the whole shared corpus (issue 6, third Done-when)", "",
         f"{len(before)} versions ({', '.join(res['lineages'])}) archived into one repository, each against its "
         f"parent ({res['logical_bytes'] / MB:.1f} MB logical, {res['archive_seconds']:.0f} s; cost model "
         f"calibrated in {res['calibrate_seconds']:.1f} s), then `{rp['command']}`.", "",
         "| | before | after |", "|---|---|---|",
         f"| physical (keys + values, MB) | {res['physical_before'] / MB:.2f} | {res['physical_after'] / MB:.2f} |",
         f"| on disk (MB) | {res['disk_before'] / MB:.2f} | {res['disk_after'] / MB:.2f} |",
         f"| estimated storage (MB) | {_mb((r.get('storage') or {}).get('before'))} | "
         f"{_mb((r.get('storage') or {}).get('after'))} |",
         f"| deepest chain | {(r.get('depth') or {}).get('before', '-')} | {(r.get('depth') or {}).get('after', '-')} |",
         f"| feasible at alpha {res['alpha']:g} (model) | {(r.get('feasible') or {}).get('before', '-')} | "
         f"{(r.get('feasible') or {}).get('after', '-')} |",
         f"| retrieve every version, sum of medians (s) | {sum(before.values()):.3f} | {sum(after.values()):.3f} |",
         "",
         f"`pas repack`: exit {rp['exit_code']}, {rp['seconds']:.1f} s wall, peak RSS "
         f"{rp.get('peak_rss_bytes', 0) / 1e9:.2f} GB; tensors {r.get('tensors')}, {r.get('chunks_written', '-')} chunks "
         f"written, {r.get('records_written', '-')} records, {r.get('verified', '-')} re-encoded tensors verified. "
         f"`pas verify`: exit {vf['exit_code']} ({vf['seconds']:.1f} s, peak RSS {vf.get('peak_rss_bytes', 0) / 1e9:.2f} GB). "
         f"Bit-exact against the source files (SHA-256 of every tensor's bytes): "
         f"{'yes' if res['bit_exact']['bit_exact'] else 'NO'} ({res['bit_exact']['tensors']} tensors of "
         f"{res['bit_exact']['versions']} versions). **{'OK' if res['ok'] else 'FAILED'}.**", "",
         f"Retrieval per version (ms, median of {res['repeat']}; modelled: the cost model's whole-version time, "
         "before / after the plan):", "",
         "| version | before | after | modelled before | modelled after | budget |", "|---|---|---|---|---|---|"]
    rec = r.get("recreation") or {}
    by_label = {}
    for lab, v in rec.items():
        by_label[lab.rsplit("@", 1)[0]] = v
    for lab in before:
        m = by_label.get(lab, {})
        L.append(f"| {lab} | {_ms(before[lab])} | {_ms(after[lab])} | {_ms(m.get('before'))} | {_ms(m.get('after'))} | "
                 f"{_ms(m.get('budget'))} |")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ run
def run(out: Path, work: Path, scale: float, corpus: list[Dataset], alphas=ALPHAS, repeat: int = 9,
        table5_corpus: bool = True, quick: bool = False, synthetic_seed: int = 0,
        quiet_seconds: float | None = None) -> dict:
    started = time.perf_counter()
    res = {"setup": {"quick": quick, "scale": scale, "alphas": list(alphas), "repeat": repeat, "model": MODEL,
                     "table5_alpha": TABLE5_ALPHA, "commit": _commit(), "host": f"{platform.node()} "
                     f"({platform.machine()}, python {platform.python_version()})",
                     "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
           "repositories": {}}
    # The process states that move timings fixed as in bench.core (glibc's heap
    # kept, numpy's huge pages off): measured, per-version retrieval noise 18% -> 15% cv.
    res["setup"]["process"] = memory.steady_process()
    work.mkdir(parents=True, exist_ok=True)
    sds = synthetic.generate(work / "data" / synthetic.dataset_name(scale), scale, synthetic_seed)[0]
    jobs = [(sds, True)] + [(d, table5_corpus) for d in corpus]
    for ds, with_t5 in jobs:
        path = work / "repos" / ds.name
        _log(f"{ds.name}: archiving {len(ds.versions)} versions")
        rep = {"archive": archive_dataset(ds, path, quiet_seconds)}
        _log(f"{ds.name}: planning at {len(alphas)} alphas")
        rep["curves"] = curves(path, alphas)
        if with_t5:
            _log(f"{ds.name}: Table V (repack x {len(TABLE5_PLANS)}, retrieve every version)")
            rep["table5"] = table5(path, work / "repack", TABLE5_ALPHA, repeat, quiet_seconds)
            rep["done_when"] = done_when(rep)
        shutil.rmtree(path, ignore_errors=True)
        res["repositories"][ds.name] = rep
    res["setup"]["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "plan.md").write_text(markdown(res))
    for name, rep in res["repositories"].items():
        plot(name, rep, out / f"plan-{name}.png")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.plan_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"scale {QUICK_SCALE}, lineage-finetune curves only")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "plan")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--scale", type=float, help=f"synthetic scale (default {FULL_SCALE}; --quick {QUICK_SCALE})")
    ap.add_argument("--alphas", help="comma-separated budget factors (default " + ",".join(map(str, ALPHAS)) + ")")
    ap.add_argument("--repeat", type=int, help="retrievals per version and plan, interleaved; the least is kept "
                    "for Table V, the median for the corpus repack (default 9; --corpus-repack: 3)")
    ap.add_argument("--no-corpus", action="store_true", help="the synthetic repository only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--quiet-seconds", type=float, default=QUIET_SECONDS,
                    help=f"most seconds a timing series waits, in all, for a quiet machine (default {QUIET_SECONDS:g}; "
                         "the calibration: a fifth of it; 0: time at once)")
    ap.add_argument("--corpus-repack", action="store_true",
                    help="instead: archive the whole shared corpus into one repository, `pas repack` it "
                         "(budget 1.6), check every version bit-exact and `pas verify` (corpus-repack.md/json)")
    ap.add_argument("--repack-args", default="", help="with --corpus-repack: more `pas repack` options, "
                    "e.g. \"--margin 0.05 --refine\"")
    a = ap.parse_args(argv)
    if a.repeat is not None and a.repeat < 1:
        ap.error("--repeat must be at least 1")
    if a.corpus_repack:
        work = a.work or Path(tempfile.mkdtemp(prefix="pas-corpus-repack-"))
        try:
            res = corpus_repack(corpus_datasets(corpus_dir(generate=False)), work, a.out,
                                repeat=a.repeat or 3, quiet_seconds=a.quiet_seconds,
                                repack_args=tuple(shlex.split(a.repack_args)))
        finally:
            if not a.keep:
                shutil.rmtree(work, ignore_errors=True)
        print((a.out / "corpus-repack.md").read_text())
        return 0 if res["ok"] else 1
    scale = a.scale or (QUICK_SCALE if a.quick else FULL_SCALE)
    alphas = tuple(float(x) for x in a.alphas.split(",")) if a.alphas else ALPHAS
    corpus: list[Dataset] = []
    if not a.no_corpus:
        try:
            wanted = CORPUS_LINEAGES[:1] if a.quick else CORPUS_LINEAGES
            corpus = [d for d in corpus_datasets(corpus_dir(generate=False)) if d.name in wanted]
        except FileNotFoundError as e:
            _log(f"no corpus, synthetic only: {e}")
    work = a.work or Path(tempfile.mkdtemp(prefix="pas-plan-bench-"))
    try:
        res = run(a.out, work, scale, corpus, alphas, a.repeat or 9, table5_corpus=not a.quick, quick=a.quick,
                  quiet_seconds=a.quiet_seconds)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print((a.out / "plan.md").read_text())
    _log(f"done in {res['setup']['seconds']:.0f} s; {a.out}/plan.json, plan.md, plan-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
