"""Typed errors of pas, each with the process exit code the CLI uses.

One table maps every failure a user can meet to a documented exit code
(docs/cli.md lists them). Library callers catch the classes; the CLI turns
them into ``pas: error: <message>`` on stderr and the code below.
"""
from __future__ import annotations


class PasError(Exception):
    """Base class of every error pas raises on purpose."""

    exit_code = 1


class BadInput(PasError):
    """The input (file, tensor, name, option) is malformed, hostile or unsupported."""

    exit_code = 4


class UnsupportedDType(BadInput):
    """A dtype pas does not know how to store bit-exactly."""


class BadName(BadInput):
    """A tensor, ref or file name that breaks the name grammar (traversal, NUL, ...)."""


class NotFound(PasError):
    """A ref, version, tensor or file that does not exist."""

    exit_code = 3


class NotARepository(PasError):
    """No pas repository at the given path (or above the current directory)."""

    exit_code = 10


class RepositoryLocked(PasError):
    """Another process holds the repository's write lock."""

    exit_code = 11


class RefConflict(RepositoryLocked):
    """A ref was moved by another writer since this one read it (several writers
    on an object store): this writer's version is stored, its ref not moved."""


class IntegrityError(PasError):
    """Stored data failed its hash check, or a version is incomplete.

    Raised instead of ever returning bytes that do not match their address.
    """

    exit_code = 12


class UnsupportedFormat(PasError):
    """The repository was written by an unknown (newer) format version."""

    exit_code = 13


class StoreError(PasError):
    """The storage backend failed (I/O error, disk full, ...)."""

    exit_code = 14
