"""The name grammar: tensor names, relative file paths and ref names.

Every name that comes from a file we read (or a repository someone shared)
passes through here before it is used, so a hostile name fails with a typed
`BadName` instead of reaching the file system. File paths in particular are
checked before any writer creates anything: nothing may land outside the
output folder.
"""
from __future__ import annotations

import re

from .errors import BadName

MAX_TENSOR_NAME = 1024
MAX_FILE_PATH = 4096        # bytes of the whole relative path (PATH_MAX)
MAX_PATH_COMPONENT = 255    # bytes of one component (NAME_MAX on common file systems)
MAX_REF_NAME = 255

_DRIVE = re.compile(r"^[A-Za-z]:")
_REF_CHARS = re.compile(r"[A-Za-z0-9._/-]+")


def _utf8(name: str, what: str) -> bytes:
    # Lone surrogates survive in Python strings but not in JSON/UTF-8 files.
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadName(f"{what} {name!r} is not valid Unicode (lone surrogate)") from None


def _nonempty_str(name: object, what: str) -> str:
    """The checks every kind of name starts with: a non-empty str without NUL."""
    if not isinstance(name, str):
        raise BadName(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise BadName(f"{what} is empty")
    if "\x00" in name:
        raise BadName(f"{what} {name!r} contains NUL")
    return name


def check_tensor_name(name: object) -> str:
    """A tensor name: non-empty str, no NUL, at most 1024 characters. Returns it."""
    _nonempty_str(name, "tensor name")
    if len(name) > MAX_TENSOR_NAME:
        raise BadName(f"tensor name {name[:40]!r}... is {len(name)} characters (max {MAX_TENSOR_NAME})")
    _utf8(name, "tensor name")
    return name


def check_file_path(relpath: object) -> str:
    """A relative POSIX path that stays inside its folder. Returns it.

    Refused: absolute paths, drive letters, backslashes, NUL, empty, ``.``
    and ``..`` components (``.`` too, so one file has exactly one spelling).
    """
    _nonempty_str(relpath, "file path")
    if "\\" in relpath:
        raise BadName(f"file path {relpath!r} contains a backslash (POSIX '/' paths only)")
    if relpath.startswith("/"):
        raise BadName(f"file path {relpath!r} is absolute")
    if _DRIVE.match(relpath):
        raise BadName(f"file path {relpath!r} starts with a drive letter")
    if len(_utf8(relpath, "file path")) > MAX_FILE_PATH:
        raise BadName(f"file path {relpath[:40]!r}... is longer than {MAX_FILE_PATH} bytes")
    for part in relpath.split("/"):
        if part == "":
            raise BadName(f"file path {relpath!r} has an empty component")
        if part in (".", ".."):
            raise BadName(f"file path {relpath!r} has a {part!r} component")
        if len(part.encode("utf-8")) > MAX_PATH_COMPONENT:
            raise BadName(f"file path {relpath!r} has a component longer than {MAX_PATH_COMPONENT} bytes")
    return relpath


def check_ref_name(name: object) -> str:
    """A git-like ref name (``main``, ``v1.0``, ``exp/lr-3e-4``). Returns it.

    ``[A-Za-z0-9._/-]+``, at most 255 characters; no ``..``, no ``//``, no
    leading ``/``, ``-`` or ``.``, no trailing ``/`` or ``.lock``, and (as in
    git) no component starting with ``.`` or ending with ``.lock``, so refs map safely onto file paths.
    """
    _nonempty_str(name, "ref name")   # NUL is also outside the allowed characters below
    if len(name) > MAX_REF_NAME:
        raise BadName(f"ref name {name[:40]!r}... is longer than {MAX_REF_NAME} characters")
    if not _REF_CHARS.fullmatch(name):
        raise BadName(f"ref name {name!r} may only contain letters, digits, '.', '_', '/' and '-'")
    if ".." in name:
        raise BadName(f"ref name {name!r} contains '..'")
    if "//" in name:
        raise BadName(f"ref name {name!r} contains '//'")
    if name[0] in "/-.":
        raise BadName(f"ref name {name!r} starts with {name[0]!r}")
    if name.endswith("/") or name.endswith(".lock"):
        raise BadName(f"ref name {name!r} ends with '/' or '.lock'")
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            raise BadName(f"ref name {name!r} has a component starting with '.' or ending with '.lock'")
    return name
