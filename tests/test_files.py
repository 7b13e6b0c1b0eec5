"""Tests for ``litgpt_min.files``: atomic writes that never follow a symbolic link, and copies of
regular files inside a root only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from litgpt_min import files
from litgpt_min.files import (
    atomic_write,
    check_output_file,
    copy_regular_file_within,
    write_files_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old\n")
    write_json_atomic(path, {"b": 1, "a": [2.5]})
    assert path.read_text() == '{\n  "a": [\n    2.5\n  ],\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as handle:
        handle.write(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("name", ["o" * 255, "\u00e9" * 127], ids=["255-ascii", "254-bytes-utf8"])
def test_a_name_the_file_system_takes_is_written_whatever_its_length(tmp_path: Path, name: str) -> None:
    """Before: "File name too long" for a name of 247 bytes or more, from its temporary sibling
    (``.NAME.PID.HEX.tmp``), after every check of the target had passed."""
    path = tmp_path / name
    write_text_atomic(path, "new\n")
    write_files_atomic({path: b"again\n"})
    assert path.read_text() == "again\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_a_long_names_temporary_sibling_cuts_it_between_characters(tmp_path: Path) -> None:
    """Before: the name was cut at byte 200, here in the middle of an "é", which made the temporary
    name no UTF-8 (a file system that holds names as UTF-8 refuses it)."""
    path = tmp_path / ("a" + "\u00e9" * 127)  # 255 bytes; byte 200 falls inside a character
    tmp, handle = files._open_temporary(path)
    handle.close()
    tmp.unlink()
    os.fsencode(tmp.name).decode("utf-8")  # strict: raises for half a character
    assert tmp.name.startswith(".a" + "\u00e9" * 99 + ".")


def test_json_with_nan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        write_json_atomic(tmp_path / "x.json", {"a": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_target_is_refused_and_its_file_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match=r"out\.txt: is a symbolic link; refusing to write through it"):
        write_text_atomic(link, "overwritten")
    assert victim.read_text() == "keep me" and link.is_symlink()


def test_a_link_planted_at_the_temporary_name_is_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setattr(files.secrets, "token_hex", lambda _: "fixed")
    (tmp_path / f".out.txt.{os.getpid()}.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_text_atomic(tmp_path / "out.txt", "overwritten")
    assert victim.read_text() == "keep me" and not (tmp_path / "out.txt").exists()


def test_a_link_planted_while_writing_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "out.txt"
    with pytest.raises(ValueError, match="became a symbolic link"), atomic_write(path) as handle:
        handle.write(b"new")
        path.symlink_to(victim)
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "victim.txt"]


@pytest.mark.parametrize(
    ("layout", "target", "parents", "message"),
    [
        pytest.param("dir", "d", False, r"d: is a directory", id="directory"),
        pytest.param(
            "file", "f/x.json", True, r"f/x\.json: lies under .*/f, which is not a directory", id="under-file"
        ),
        pytest.param("link", "l", False, r"l: is a symbolic link", id="symlink"),
        pytest.param("", "missing/x.json", False, r"the directory .*missing does not exist", id="missing-directory"),
        pytest.param("", "missing/x.json", True, None, id="creatable-directory"),
    ],
)
def test_output_file_checks(tmp_path: Path, layout: str, target: str, parents: bool, message: str | None) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    if message is None:
        assert check_output_file(tmp_path / target, parents=parents) == tmp_path / target
    else:
        with pytest.raises(ValueError, match=message):
            check_output_file(tmp_path / target, "-o", parents=parents)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    (root / "tokenizer.json").write_text('{"a": 1}')
    (tmp_path / "secret").write_text("outside")
    return root, out


def test_copy_of_a_regular_file_and_of_a_link_inside_the_root(tmp_path: Path) -> None:
    root, out = _tree(tmp_path)
    copy_regular_file_within(root / "tokenizer.json", root, out / "tokenizer.json")
    (root / "alias.json").symlink_to("tokenizer.json")
    copy_regular_file_within(root / "alias.json", root, out / "alias.json")
    assert json.loads((out / "alias.json").read_text()) == {"a": 1}
    assert not (out / "alias.json").is_symlink()  # the copy is a regular file


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda root, tmp: (root / "x").symlink_to(tmp / "secret"), r"resolves to .*secret, outside", id="link-out"
        ),
        pytest.param(lambda root, tmp: (root / "x").symlink_to(root / "gone"), r"cannot read", id="dangling-link"),
        pytest.param(lambda root, tmp: os.mkfifo(root / "x"), r"is not a regular file", id="fifo"),
        pytest.param(lambda root, tmp: (root / "x").mkdir(), r"is not a regular file", id="directory"),
    ],
)
def test_copy_refuses_anything_but_a_regular_file_inside_the_root(tmp_path: Path, make: Any, message: str) -> None:
    root, out = _tree(tmp_path)
    make(root, tmp_path)
    with pytest.raises(ValueError, match=message):
        copy_regular_file_within(root / "x", root, out / "x")
    assert not (out / "x").exists()


def test_copy_never_writes_through_a_link_in_the_output(tmp_path: Path) -> None:
    root, out = _tree(tmp_path)
    (out / "tokenizer.json").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="symbolic link"):
        copy_regular_file_within(root / "tokenizer.json", root, out / "tokenizer.json")
    assert (tmp_path / "secret").read_text() == "outside"


def test_several_files_are_written_as_one_change(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "sub" / "b.json"
    first.write_text("old a")
    files.write_files_atomic({first: b"new a", second: b"new b"}, parents=True)
    assert (first.read_bytes(), second.read_bytes()) == (b"new a", b"new b")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.json", "sub"]  # no temporary file left


def test_a_failure_while_writing_several_files_replaces_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old a")
    second.write_text("old b")
    synced: list[int] = []

    def full_disk_at_the_second_file(fd: int) -> None:
        synced.append(fd)
        if len(synced) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk_at_the_second_file)
    with pytest.raises(OSError, match="No space left") as failed:
        files.write_files_atomic({first: b"new a", second: b"new b"})
    assert failed.value.filename == str(second), "the error names the file it was writing"
    assert (first.read_text(), second.read_text()) == ("old a", "old b"), "the first file is not replaced alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_link_among_several_targets_refuses_them_all(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    first, link = tmp_path / "a.json", tmp_path / "b.json"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match=r"b\.json: is a symbolic link"):
        files.write_files_atomic({first: b"new a", link: b"new b"})
    assert not first.exists() and victim.read_text() == "keep me"


def test_a_read_only_file_is_not_an_output(tmp_path: Path) -> None:
    kept = tmp_path / "baseline.json"
    kept.write_text("{}")
    assert check_output_file(kept) == kept
    kept.chmod(0o444)
    with pytest.raises(ValueError, match=r"^-o .*baseline\.json: is read-only \(mode 444\); refusing to replace it"):
        check_output_file(kept, "-o")
    with pytest.raises(ValueError, match=r"baseline\.json: is read-only"):
        write_text_atomic(kept, "replaced")
    with pytest.raises(ValueError, match=r"baseline\.json: is read-only"):
        files.write_files_atomic({tmp_path / "other.json": b"new", kept: b"replaced"})
    assert kept.read_text() == "{}" and not (tmp_path / "other.json").exists()
    kept.chmod(0o644)
    assert check_output_file(kept) == kept
