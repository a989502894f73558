"""Run the kernel micro-benchmarks and print them as ratios to memcpy.

    python -m bench.micro [--quick] [--json PATH] [--out DIR] [--mib X] [--rounds N] [-k EXPR]

Runs ``pytest bench/micro --benchmark-json=PATH`` (sizes passed through
PAS_MICRO_MIB / PAS_MICRO_ROUNDS), then reads the JSON and writes a Markdown
table to OUT/micro.md (default OUT = bench/results/). Per kernel: median time
of the rounds, MB/s = logical bytes / median (MB = 1e6 bytes), and
ratio = memcpy's time for the same bytes / the kernel's time, i.e. the
kernel's MB/s over memcpy's (0.25: four times slower than copying the bytes).
Exit status: pytest's (1 when a benchmark or the round-trip test failed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_OUT = HERE.parent / "results"
GROUPS = ("memcpy", "split", "merge", "delta", "hash", "codec", "select")
FULL = {"mib": 16.0, "rounds": 15}
QUICK = {"mib": 4.0, "rounds": 5}
MB = 1e6


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> str:
    out = []
    for mod in ("numpy", "numba", "zstandard", "blosc2", "xxhash"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - a missing module only leaves the header shorter
            pass
    return ", ".join(out)


def table(data: dict, mib: float, rounds: int) -> str:
    benches = data.get("benchmarks", [])
    memcpy = [b for b in benches if b["group"] == "memcpy"]
    if not memcpy:
        raise SystemExit("no memcpy baseline in the results (was it deselected with -k?)")
    base = memcpy[0]["extra_info"]["bytes"] / memcpy[0]["stats"]["median"]   # bytes/s

    def key(b):
        g = b.get("group") or ""
        return (GROUPS.index(g) if g in GROUPS else len(GROUPS), b["extra_info"].get("order", 0))

    lines = [
        "# pas kernel micro-benchmarks",
        "",
        f"{datetime.date.today()}, {_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_versions()}.",
        f"Input: {mib:g} MiB of float32 weights N(0, 0.02) (BF16: their top 16 bits, half the bytes); "
        "deltas: child = weights + N(0, 1e-4) against the weights; codecs: planes 0 and 3 of the "
        "F32 planes-exp split, in 1 MiB chunks.",
        f"Median of {rounds} rounds (1 warm-up). MB = 1e6 bytes. ratio = memcpy time for the same bytes "
        f"/ kernel time (memcpy: {base / MB:,.0f} MB/s; 0.25 = 4x slower than memcpy). "
        "spread = IQR / median.",
        "",
        "| kernel | MiB | median ms | MB/s | ratio | spread | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for b in sorted(benches, key=key):
        info, med = b["extra_info"], b["stats"]["median"]
        nbytes = info["bytes"]
        speed = nbytes / med
        spread = b["stats"]["iqr"] / med if med else 0.0
        lines.append(f"| {info.get('kernel', b['name'])} | {nbytes / (1 << 20):.3g} | {med * 1e3:.3f} | "
                     f"{speed / MB:,.0f} | {speed / base:.3f} | {spread:.0%} | {info.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK['mib']:g} MiB buffer, {QUICK['rounds']} rounds")
    ap.add_argument("--json", type=Path, help="pytest-benchmark JSON (default OUT/micro.json)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for micro.md (default bench/results)")
    ap.add_argument("--mib", type=float, help=f"float32 buffer size in MiB (default {FULL['mib']:g})")
    ap.add_argument("--rounds", type=int, help=f"timed rounds per kernel (default {FULL['rounds']})")
    ap.add_argument("-k", dest="select", help="pytest -k expression (memcpy is always kept)")
    args = ap.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    if args.mib:
        cfg["mib"] = args.mib
    if args.rounds:
        cfg["rounds"] = args.rounds
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = (args.json or args.out / "micro.json").resolve()
    json_path.parent.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ, PAS_MICRO_MIB=str(cfg["mib"]), PAS_MICRO_ROUNDS=str(cfg["rounds"]))
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={json_path}", "--benchmark-quiet"]
    if args.select:
        cmd += ["-k", f"memcpy or roundtrips or ({args.select})"]
    print("$", " ".join(cmd), f"(PAS_MICRO_MIB={cfg['mib']:g} PAS_MICRO_ROUNDS={cfg['rounds']})", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if not json_path.exists():
        print("no benchmark JSON written", file=sys.stderr)
        return rc or 1

    md = table(json.loads(json_path.read_text()), cfg["mib"], cfg["rounds"])
    (args.out / "micro.md").write_text(md)
    print()
    print(md)
    print(f"written: {args.out / 'micro.md'}, {json_path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
