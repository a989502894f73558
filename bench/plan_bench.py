"""The planning benchmark of issue 6: the paper's Fig. 6(c) and Table V on our data.

    python -m bench.plan_bench [--quick] [--out DIR] [--work DIR] [--scale S]
                               [--alphas 1,1.6,4] [--repeat 3] [--no-corpus] [--keep]

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
``top_bytes=k``), median of ``--repeat`` runs per version (warm OS cache, one
thread per call as the library chooses). Reported with the physical bytes
(`Repository.physical_bytes`), the model's prediction per version, and each
version's budget (alpha x its SPT cost, model seconds); measured times are also
held against alpha x the MEASURED time of the same version under the SPT plan.

The synthetic SD-shaped dataset (`bench.synthetic`, ``--scale``) is always
run; the shared corpus's lineage-finetune and snapshots-cnn (one repository
each) unless ``--no-corpus``. ``--quick``: scale 0.25 and lineage-finetune's
curves only (Table V on the synthetic repository only).

Output (``--out``, default ``bench/results/plan``): ``plan.json`` (every
point), ``plan.md`` (the tables) and ``plan-<repository>.png`` (storage vs
alpha, one line per algorithm; mst/spt as horizontal references; infeasible
points marked x). Scratch repositories go to ``--work`` (default: a new
temporary folder, removed at the end unless ``--keep``).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import synthetic
from bench.datasets import Dataset, corpus_datasets, corpus_dir
from pas.archive import budgets_for, evaluate, repo_graph
from pas.archive.algorithms import plan as make_plan
from pas.archive.plan import Plan
from pas.archive.repack import repack
from pas.repo import Repository

ALGORITHMS = ("mst", "spt", "last", "pas-mt", "pas-pt", "best")
ALPHAS = (1.0, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0, 4.0)
TABLE5_ALPHA = 1.6
TABLE5_PLANS = (("spt", "whole storage (SPT)"), ("mst", "least storage (MST, depth-bounded)"),
                ("best", "PAS (best)"))
PRECISIONS = (("full", None), ("top 2 bytes", 2), ("top 1 byte", 1))
CORPUS_LINEAGES = ("lineage-finetune", "snapshots-cnn")
FULL_SCALE, QUICK_SCALE = 0.4, 0.25
MODEL = "independent"
MB = 1e6


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
def archive_dataset(ds: Dataset, path: Path) -> dict:
    """Archive every version of ``ds`` (parents first) into a new repository at
    ``path``; calibrate the cost model once (`.pas/costs.json`, reused by copies)."""
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
        costs = repo_graph.cost_model(repo)
        physical = repo.physical_bytes()
    return {"dataset": ds.name, "versions": len(ds.versions), "logical_bytes": logical,
            "physical_bytes": physical, "archive_seconds": archive_s, "cost_model": costs.to_json()}


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


def time_retrievals(path: Path, labels, repeat: int) -> dict:
    """{precision: {label: median seconds}}: every version retrieved ``repeat`` times
    (round robin over the versions), full and from the top planes."""
    out = {}
    with Repository.open(path) as repo:
        ids = _version_labels(repo, labels)
        for pname, k in PRECISIONS:
            runs = {lab: [] for lab in labels}
            for _ in range(repeat):
                for lab in labels:
                    t = time.perf_counter()
                    snap = repo.retrieve(ids[lab], top_bytes=k)
                    runs[lab].append(time.perf_counter() - t)
                    del snap
            out[pname] = {lab: statistics.median(v) for lab, v in runs.items()}
    return out


def table5(path: Path, work: Path, alpha: float, repeat: int) -> dict:
    """Copy the repository, repack it to each Table V plan, time every version."""
    rows = []
    for alg, title in TABLE5_PLANS:
        dst = work / f"{path.name}--{alg}"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(path, dst)
        try:
            t = time.perf_counter()
            with Repository.open(dst, write=True) as repo:
                res = repack(repo, algorithm=alg, alpha=alpha, model=MODEL)
            rsec = time.perf_counter() - t
            labels = sorted(res.recreation)
            times = time_retrievals(dst, labels, repeat)
        finally:
            shutil.rmtree(dst, ignore_errors=True)
        per = {lab: {"budget": _fin(res.recreation[lab]["budget"]), "modelled": res.recreation[lab]["after"],
                     **{f"measured_{p}": times[p][lab] for p, _ in PRECISIONS}} for lab in labels}
        rows.append({"plan": alg, "title": title, "algorithm": res.algorithm, "alpha": alpha,
                     "physical_bytes": res.physical_after, "physical_before": res.physical_before,
                     "estimated_storage": res.storage["after"], "feasible_modelled": res.feasible["after"],
                     "deepest_chain": res.depth["after"], "tensors": res.tensors, "repack_seconds": rsec,
                     "mean_modelled": statistics.fmean(v["modelled"] for v in per.values()),
                     **{f"mean_measured_{p}": statistics.fmean(times[p].values()) for p, _ in PRECISIONS},
                     "versions": per})
    # measured budgets: alpha x the version's measured time under the SPT plan
    spt_row = rows[0]
    for row in rows:
        within_model = within_measured = 0
        for lab, v in row["versions"].items():
            v["measured_budget"] = alpha * spt_row["versions"][lab]["measured_full"]
            v["within_budget"] = v["budget"] is None or v["measured_full"] <= v["budget"]
            v["within_measured_budget"] = v["measured_full"] <= v["measured_budget"]
            within_model += v["within_budget"]
            within_measured += v["within_measured_budget"]
        row["versions_within_budget"] = within_model
        row["versions_within_measured_budget"] = within_measured
        row["worst_measured_over_budget"] = max(v["measured_full"] / v["budget"] for v in row["versions"].values()
                                                if v["budget"])
        row["worst_measured_over_measured_budget"] = max(v["measured_full"] / v["measured_budget"]
                                                         for v in row["versions"].values())
    return {"alpha": alpha, "repeat": repeat, "rows": rows}


def done_when(rep: dict) -> dict:
    """Issue 6's Done-when on one repository: at alpha 1.6, storage within 10% of
    the MST, every version within budget by the model and by measurement."""
    t5 = rep["table5"]
    rows = {r["plan"]: r for r in t5["rows"]}
    pas, mst = rows["best"], rows["mst"]
    floor = rep["curves"]["references"]["mst_unbounded"]["storage"]
    n = len(pas["versions"])
    out = {"alpha": t5["alpha"],
           "physical_over_mst": pas["physical_bytes"] / mst["physical_bytes"],
           "estimated_over_mst_bounded": pas["estimated_storage"] / mst["estimated_storage"],
           "estimated_over_mst_unbounded": pas["estimated_storage"] / floor,
           "feasible_modelled": pas["feasible_modelled"],
           "versions": n, "within_budget_measured": pas["versions_within_budget"],
           "within_measured_budget": pas["versions_within_measured_budget"]}
    out["storage_ok"] = out["physical_over_mst"] <= 1.10       # against the MST the repository can store
    out["met"] = bool(out["storage_ok"] and out["feasible_modelled"] and out["within_budget_measured"] == n)
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
        gr, refs = c["graph"], c["references"]
        L += [f"## {name}", "",
              f"{a['versions']} versions, {a['logical_bytes'] / MB:.1f} MB logical, archived in "
              f"{a['archive_seconds']:.1f} s to {a['physical_bytes'] / MB:.2f} MB physical. Storage graph: "
              f"{gr['matrices']} matrices, {gr['arcs']} arcs, {'directed' if gr['directed'] else 'two-way'}, "
              f"built in {gr['build_seconds']:.1f} s; delta.max_depth {gr['max_depth']}. Cost model: "
              f"a = {1e6 * a['cost_model']['a']:.0f} us, b = {1e9 * a['cost_model']['b']:.3f} ns/B, "
              f"c = {1e9 * a['cost_model']['c']:.2f} ns/element.", "",
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
        L += [f"### Table V: time to recreate a version, alpha = {t5['alpha']:g} (measured: median of "
              f"{t5['repeat']} per version, then the mean over versions)", "",
              "| plan | physical MB | estimated MB | deepest chain | modelled full (ms) | measured full (ms) | "
              "measured top 2 bytes (ms) | measured top 1 byte (ms) | within budget (model / measured) | repack (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t5["rows"]:
            n = len(r["versions"])
            L.append(f"| {r['title']} [{r['algorithm']}] | {_mb(r['physical_bytes'])} | {_mb(r['estimated_storage'])} | "
                     f"{r['deepest_chain']} | {_ms(r['mean_modelled'])} | {_ms(r['mean_measured_full'])} | "
                     f"{_ms(r['mean_measured_top 2 bytes'])} | {_ms(r['mean_measured_top 1 byte'])} | "
                     f"{'yes' if r['feasible_modelled'] else 'no'} / {r['versions_within_budget']} of {n} | "
                     f"{r['repack_seconds']:.1f} |")
        dw = rep["done_when"]
        L += ["", f"**Done-when (alpha = {dw['alpha']:g})**: PAS physical storage = {dw['physical_over_mst']:.3f} x the "
              f"depth-bounded MST's (estimated: {dw['estimated_over_mst_bounded']:.3f} x; "
              f"{dw['estimated_over_mst_unbounded']:.3f} x the unbounded MST floor); every version within budget by "
              f"the model: {'yes' if dw['feasible_modelled'] else 'NO'}; by measurement: "
              f"{dw['within_budget_measured']} of {dw['versions']} (measured against alpha x the version's measured "
              f"SPT time: {dw['within_measured_budget']} of {dw['versions']}). "
              f"**{'Met' if dw['met'] else 'NOT met'}.**", ""]
        pas = next(r for r in t5["rows"] if r["plan"] == "best")
        L += ["Per version, PAS plan (ms; budget = alpha x the SPT cost in model seconds; measured budget = alpha x "
              "the measured SPT time):", "",
              "| version | budget | modelled | measured | measured / budget | measured budget | measured / measured budget |",
              "|---|---|---|---|---|---|---|"]
        for lab, v in pas["versions"].items():
            L.append(f"| {lab} | {_ms(v['budget'])} | {_ms(v['modelled'])} | {_ms(v['measured_full'])} | "
                     f"{v['measured_full'] / v['budget']:.2f} | {_ms(v['measured_budget'])} | "
                     f"{v['measured_full'] / v['measured_budget']:.2f} |" if v["budget"] else
                     f"| {lab} | - | {_ms(v['modelled'])} | {_ms(v['measured_full'])} | - | - | - |")
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


# ------------------------------------------------------------------ run
def run(out: Path, work: Path, scale: float, corpus: list[Dataset], alphas=ALPHAS, repeat: int = 3,
        table5_corpus: bool = True, quick: bool = False, synthetic_seed: int = 0) -> dict:
    started = time.perf_counter()
    res = {"setup": {"quick": quick, "scale": scale, "alphas": list(alphas), "repeat": repeat, "model": MODEL,
                     "table5_alpha": TABLE5_ALPHA, "commit": _commit(), "host": f"{platform.node()} "
                     f"({platform.machine()}, python {platform.python_version()})",
                     "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
           "repositories": {}}
    work.mkdir(parents=True, exist_ok=True)
    sds = synthetic.generate(work / "data" / synthetic.dataset_name(scale), scale, synthetic_seed)[0]
    jobs = [(sds, True)] + [(d, table5_corpus) for d in corpus]
    for ds, with_t5 in jobs:
        path = work / "repos" / ds.name
        _log(f"{ds.name}: archiving {len(ds.versions)} versions")
        rep = {"archive": archive_dataset(ds, path)}
        _log(f"{ds.name}: planning at {len(alphas)} alphas")
        rep["curves"] = curves(path, alphas)
        if with_t5:
            _log(f"{ds.name}: Table V (repack x {len(TABLE5_PLANS)}, retrieve every version)")
            rep["table5"] = table5(path, work / "repack", TABLE5_ALPHA, repeat)
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
    ap.add_argument("--repeat", type=int, default=3, help="retrievals per version (median)")
    ap.add_argument("--no-corpus", action="store_true", help="the synthetic repository only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args(argv)
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
        res = run(a.out, work, scale, corpus, alphas, a.repeat, table5_corpus=not a.quick, quick=a.quick)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print((a.out / "plan.md").read_text())
    _log(f"done in {res['setup']['seconds']:.0f} s; {a.out}/plan.json, plan.md, plan-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
