"""Coverage-guided fuzzing of pas's decoders and input parsers with atheris.

    python tests/fuzz.py TARGET [--seconds N]     (make fuzz: every target)

Starts from the seeds (`fuzz_targets.seeds`) and the inputs kept in
``tests/fuzz_corpus/TARGET``, and adds to that folder every input that reaches
new code; an input that makes the target raise anything but a `PasError` (or
crash, hang or run out of memory) is written there as ``crash-<sha1>``. Fix the
bug and commit the folder: `tests/test_fuzz_corpus.py` replays every input in
it on every test run.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris (make fuzz does)", file=sys.stderr)
        return 2
    # pas must be imported inside instrument_imports to be instrumented, so the
    # seeds (which pas makes) are written by a child process first.
    work = Path(tempfile.mkdtemp(prefix=f"pas-fuzz-{args.target}-"))   # atheris's growing corpus
    subprocess.run([sys.executable, "-c", "import sys, fuzz_targets; fuzz_targets.write_seeds(sys.argv[1], "
                    "sys.argv[2])", args.target, str(work)], check=True, cwd=Path(__file__).parent)
    with atheris.instrument_imports(include=["pas"]):
        import fuzz_targets
        import pas.codecs, pas.formats.npz, pas.formats.safetensors, pas.journal, pas.reader, pas.records  # noqa: E401,F401
    if args.target not in fuzz_targets.TARGETS:
        ap.error(f"unknown target {args.target!r}: one of {', '.join(sorted(fuzz_targets.TARGETS))}")
    kept = fuzz_targets.CORPUS / args.target
    kept.mkdir(parents=True, exist_ok=True)
    from pas.errors import PasError
    target = fuzz_targets.TARGETS[args.target]

    def one(data: bytes) -> None:
        try:
            target(data)
        except PasError:
            pass
        except BaseException:
            name = kept / f"crash-{hashlib.sha1(data).hexdigest()}"
            name.write_bytes(data)
            print(f"\nsaved the input to {name}", file=sys.stderr)
            raise

    # The kept folder first: libFuzzer adds each input that reaches new code to
    # it, so the corpus kept in git grows with what fuzzing explored.
    atheris.Setup([sys.argv[0], str(kept), str(work), f"-max_total_time={args.seconds}", "-rss_limit_mb=2048",
                   "-timeout=10", "-max_len=8192", f"-artifact_prefix={kept}/"], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
