"""stylesift.atomic: a replaced file is the old one or the new one, and nothing is left beside it."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from stylesift import atomic
from stylesift.atomic import atomic_path, atomic_write, is_temp_name, temp_name


def litter(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_name(p.name))


def test_atomic_write_replaces_the_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "data.json"
    target.write_text("old")
    with atomic_write(target, "w") as fh:
        fh.write("new ✓")
        assert target.read_text() == "old"  # not replaced until the block ends
    assert target.read_text(encoding="utf-8") == "new ✓"
    with atomic_write(target) as fh:
        fh.write(b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_atomic_path_creates_a_new_file_through_its_temp_path(tmp_path):
    target = tmp_path / "model.ssmodel"
    with atomic_path(target) as tmp:
        assert tmp == temp_name(target) and tmp.parent == tmp_path and is_temp_name(tmp.name, target.name)
        tmp.write_bytes(b"made by a library")
        assert not target.exists()
    assert target.read_bytes() == b"made by a library" and litter(tmp_path) == []


@pytest.mark.parametrize("shape", ["write", "path"])
def test_an_exception_in_the_block_removes_the_temp_and_keeps_the_target(tmp_path, shape):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half way"):
        if shape == "write":
            with atomic_write(target) as fh:
                fh.write(b"half")
                raise RuntimeError("half way")
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("half way")
    assert target.read_bytes() == b"old" and litter(tmp_path) == []


def test_a_full_disk_while_writing_leaves_no_litter(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as exc:
        with atomic_write(target) as fh:
            fh.write(b"part of it")
            fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
    assert exc.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and litter(tmp_path) == []


def test_a_failing_rename_leaves_no_litter_and_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        with atomic_write(target) as fh:
            fh.write(b"new")
    assert target.read_bytes() == b"old" and litter(tmp_path) == []
    with pytest.raises(OSError, match="No space left"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old" and litter(tmp_path) == []


def test_before_rename_sees_the_complete_temp_file_and_can_abort(tmp_path):
    target = tmp_path / "data.bin"
    seen = []

    def crash(tmp):
        seen.append(tmp.read_bytes())
        raise KeyboardInterrupt  # a kill just before the rename

    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, before_rename=crash) as fh:
            fh.write(b"all of it")
    assert seen == [b"all of it"] and not target.exists() and litter(tmp_path) == []


def test_text_or_binary_whole_files_only(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_write(tmp_path / "log.txt", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_hidden_per_process_and_recognised():
    tmp = temp_name("/data/store.h5")
    assert tmp.parent.as_posix() == "/data" and tmp.name == f".store.h5.{os.getpid()}.tmp"
    assert is_temp_name(tmp.name) and is_temp_name(tmp.name, "store.h5")
    assert is_temp_name(".store.h5.4242.tmp", "store.h5")  # another (crashed) process's temp is recognised too
    assert not is_temp_name(tmp.name, "other.h5")
    assert not is_temp_name("store.h5") and not is_temp_name(".store.h5") and not is_temp_name("store.h5.tmp")
    assert not is_temp_name(".store.h5.tmp.bak")


def test_text_mode_passes_newline_through(tmp_path):
    # The csv module needs newline="" to write its own row ends; the parameter must reach open().
    with atomic_write(tmp_path / "a.txt", "w", newline="\r\n") as fh:
        fh.write("one\ntwo\n")
    with atomic_write(tmp_path / "b.txt", "w") as fh:
        fh.write("one\ntwo\n")
    assert (tmp_path / "a.txt").read_bytes() == b"one\r\ntwo\r\n"
    assert (tmp_path / "b.txt").read_bytes() == b"one\ntwo\n"


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".m-004.ssmodel.{dead.pid}.tmp"  # a retrain killed mid-write
    mine = tmp_path / f".m-005.ssmodel.{os.getpid()}.tmp"
    other_kind = tmp_path / f".s.h5.{dead.pid}.tmp"
    for p in (gone, mine, other_kind):
        p.write_bytes(b"half")
    (tmp_path / "m-003.ssmodel").write_bytes(b"whole")
    assert atomic.remove_stale_temps(tmp_path, ".ssmodel") == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_kind.name, "m-003.ssmodel"])
