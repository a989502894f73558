"""Hostile strings in every command-line argument (issue 5, T10/T11): each is
refused with a typed, one-line error (a documented exit code, no traceback) in
under a second, and nothing is written outside the repository.

Run in process (``pas.cli.main`` with a patched argv) after a warm-up, so the
second is the command's own time, not Python's start-up.
"""
from __future__ import annotations

import sys

import pytest
from conftest import seconds_within

from pas.cli import main
from pas.repo import Repository

LONG = "x" * 5000
HOSTILE_NAMES = ["../../etc/passwd", "a/../../b", "/abs", "..", ".", "", " ", "-rf", "--help-me", "a\nb", "a\tb",
                 "名前/../x", "%s%n%x", "$(touch pwned)", "`touch pwned`", "a;touch pwned", "refs/heads/../x",
                 "\x1b[31mred", "a" * 300, LONG, "\u202eevil", "CON", "a:b", "x" * 255 + "/y"]
TYPED = {2, 3, 4, 10, 11, 12, 13, 14}


def run(argv: list[str], capsys) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["pas", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


@pytest.fixture
def repo(tmp_path, capsys):
    path = tmp_path / "repo"
    Repository.init(path).close()
    run(["--repo", str(path), "ls"], capsys)      # warm-up: imports
    return path


def _cases(repo, tmp_path):
    r = ["--repo", str(repo)]
    for bad in HOSTILE_NAMES:
        yield r + ["retrieve", bad, "-o", str(tmp_path / "out")]
        yield r + ["show", bad]
        yield r + ["log", bad]
        yield r + ["ls", bad]
        yield r + ["tag", bad, "nothing"]
        yield r + ["tag", "ok", bad]
        yield r + ["tag", bad, "x", "--delete"]
        yield r + ["archive", str(tmp_path / "missing.safetensors"), "--name", bad]
        yield r + ["archive", bad or "''", "--name", "m"]
        yield r + ["archive", "/dev/zero", "--name", bad]
        yield r + ["retrieve", "m", "-o", str(tmp_path / "o"), "--tensor", bad]
        yield r + ["retrieve", "m", "-o", str(tmp_path / "o"), "--format", bad]
        yield r + ["retrieve", "m", "-o", str(tmp_path / "o"), "--bytes", bad]
        yield ["--repo", bad, "ls"]
    for k in ("-1", "0", "99999999999999999999", "nan"):
        yield r + ["retrieve", "m", "-o", str(tmp_path / "o"), "--bytes", k]


def test_hostile_arguments_are_refused_typed_and_fast(repo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # relative paths land here, where we look
    before = sorted(p.name for p in tmp_path.iterdir())
    n = 0
    for argv in _cases(repo, tmp_path):
        code, err = run(argv, capsys)
        label = " ".join(a[:40] for a in argv[2:])
        assert code in TYPED, (label, code, err[-400:])
        assert "Traceback" not in err, (label, err[-800:])
        assert len(err) < 4000, (label, len(err))      # errors echo bounded excerpts of the input
        elapsed = seconds_within(lambda argv=argv: run(argv, capsys), 1.0)
        assert elapsed < 1.0, (label, elapsed)
        n += 1
    assert n > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written outside the repository"
    assert not (tmp_path / "pwned").exists()
    with Repository.open(repo) as r:
        assert r.verify().ok and r.refs() == {}
