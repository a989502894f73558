"""The version journal: ``.pas/journal``, an append-only file beside the store
that lists every version ever committed, one line each.

Why: damage to the store's own files can make it forget versions without a
word. A truncated RocksDB MANIFEST, or a flipped bit in a table file's index,
and RocksDB opens an older state as if nothing happened (measured:
tests/test_file_corruption.py; reliability plan §1.2 for the WAL). Versions are
never deleted, so every version the journal names must be in the store, and
``pas verify`` names each one that is not.

A line: ``{"version": HEX, "ref": NAME}`` TAB xxh3-64 hex of that JSON, LF.
Written after the version's synced batch and synced itself, so the journal
names only durable versions (a crash between the two leaves a version the
journal does not name: not an error). A last line without its LF is a write
cut short by a crash, and ignored; any other line that fails its check is
reported as damage.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .faults import crash_point

FILE_NAME = "journal"


class JournalWarning(UserWarning):
    """A saved version could not be recorded in the journal (disk full, I/O error)."""


@dataclass(frozen=True)
class Entry:
    line: int
    version: bytes
    ref: str


def _check(body: str) -> str:
    return xxhash.xxh3_64_hexdigest(body.encode())


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, version_id: bytes, ref: str) -> None:
        body = json.dumps({"version": version_id.hex(), "ref": ref}, separators=(",", ":"), ensure_ascii=True)
        new = not self.path.exists()
        crash_point("journal.append")
        with open(self.path, "a", encoding="ascii") as f:
            f.write(f"{body}\t{_check(body)}\n")
            f.flush()
            os.fsync(f.fileno())
        if new:   # the file's name must survive a crash too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        crash_point("journal.append.done")

    def read(self) -> tuple[list[Entry], list[str]]:
        """The entries, and a description of every damaged line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], []
        lines = data.split(b"\n")[:-1]   # after the last LF: nothing, or a write cut short by a crash
        entries, problems = [], []
        for n, raw in enumerate(lines, 1):
            try:
                body, check = raw.decode("ascii").split("\t")
                if _check(body) != check:
                    raise ValueError("check mismatch")
                rec = json.loads(body)
                entries.append(Entry(n, bytes.fromhex(rec["version"]), str(rec["ref"])))
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"journal line {n} is damaged ({exc})")
        return entries, problems
