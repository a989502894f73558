"""Tests of pas.names: the tensor / file path / ref name grammar."""
from __future__ import annotations

import pytest

from pas.errors import BadInput, BadName
from pas.names import check_file_path, check_ref_name, check_tensor_name


@pytest.mark.parametrize("name", ["w", "model.layers.0.weight", "a/b", "é✓", " ", "x" * 1024, "__metadata"])
def test_tensor_names_ok(name):
    assert check_tensor_name(name) == name


@pytest.mark.parametrize("name", ["", "a\0b", "x" * 1025, "\ud800", 3, None, b"w"])
def test_tensor_names_bad(name):
    with pytest.raises(BadName):
        check_tensor_name(name)


@pytest.mark.parametrize("path", ["config.json", "sub/dir/file.txt", "a..b", "..a", "a..", ".gitattributes",
                                  "tokenizer/vocab.txt", "x" * 255, "C", "ab"])
def test_file_paths_ok(path):
    assert check_file_path(path) == path


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "..", ".", "./a", "a/./b",
                                  "a//b", "a/", "C:/x", "c:x", "a:b", "a\\b", "..\\x", "a\0b", "x" * 256,
                                  "/".join(["abcdefgh"] * 500), "\udc80", 7])
def test_file_paths_bad(path):
    with pytest.raises(BadName):
        check_file_path(path)


@pytest.mark.parametrize("ref", ["main", "v1.0", "exp/lr-3e-4", "feature/a_b", "A9", "x" * 255, "a.b/c.d"])
def test_refs_ok(ref):
    assert check_ref_name(ref) == ref


@pytest.mark.parametrize("ref", ["", "/main", "-x", ".x", "a/", "a.lock", "a..b", "a//b", "a b", "a~1", "a^",
                                 "a:b", "a\\b", "x" * 256, "a/.hidden", "a.lock/b", "é", "a\0", None])
def test_refs_bad(ref):
    with pytest.raises(BadName):
        check_ref_name(ref)


def test_bad_name_is_bad_input():
    # Callers (CLI exit codes) may catch either.
    assert issubclass(BadName, BadInput)
