"""jaxcpt.files: atomic writes with the umask's modes (never changing the umask) and the one
tokenizer loader (jaxcpt.tokenizer_loader)."""

import json
import os
import pathlib
import stat
import subprocess
import sys

import numpy as np
import pytest

from jaxcpt import files
from jaxcpt.errors import JaxcptError
from jaxcpt.files import (OutputExistsError, atomic_write, ensure_new_dir, fresh_output_dir,
                          write_json)

REPO = pathlib.Path(__file__).resolve().parents[1]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def proc_umask() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    pytest.skip("no Umask line in /proc/self/status")


def listing(directory) -> list[str]:
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


@pytest.fixture
def umask_must_not_change(monkeypatch):
    """Any os.umask call fails the test; the cached umask is read again (from /proc) under it."""
    def forbidden(*args):
        raise AssertionError("os.umask was called")
    files.umask.cache_clear()
    monkeypatch.setattr(os, "umask", forbidden)
    yield
    files.umask.cache_clear()


def test_content_kinds_are_written(tmp_path, umask_must_not_change):
    atomic_write(tmp_path / "a.txt", "grüße\n")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    arrays = {"x": np.arange(3)}
    atomic_write(tmp_path / "c.npz", lambda handle: np.savez(handle, **arrays))
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "grüße\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    np.testing.assert_array_equal(np.load(tmp_path / "c.npz")["x"], np.arange(3))
    atomic_write(tmp_path / "a.txt", "new")   # overwrite=True (the default) replaces
    assert (tmp_path / "a.txt").read_text() == "new"
    assert listing(tmp_path) == ["a.txt", "b.bin", "c.npz"]   # no temporary file left
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "d", 42)
    assert not (tmp_path / "d").exists() and len(listing(tmp_path)) == 3


def test_modes_follow_the_umask_read_from_proc(tmp_path, umask_must_not_change):
    mask = proc_umask()
    assert files.umask() == mask
    assert (files.file_mode(), files.dir_mode()) == (0o666 & ~mask, 0o777 & ~mask)
    atomic_write(tmp_path / "f", "x")   # mkstemp alone would give 0o600
    assert mode(tmp_path / "f") == 0o666 & ~mask
    with fresh_output_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "g").write_text("y")
        os.chmod(tmp / "sub" / "g", 0o600)
    assert mode(tmp_path / "out") == mode(tmp_path / "out" / "sub") == 0o777 & ~mask
    assert mode(tmp_path / "out" / "sub" / "g") == 0o666 & ~mask


@pytest.mark.parametrize("mask", [0o077, 0o002])
def test_modes_follow_another_umask(tmp_path, mask):
    """A process started under another umask publishes with that one."""
    script = f"""
import os, pathlib, stat, sys
os.umask({mask:#o})
from jaxcpt.files import atomic_write, fresh_output_dir
out = pathlib.Path(sys.argv[1])
atomic_write(out / "file", "x")
with fresh_output_dir(out / "dir") as tmp:
    (tmp / "inner").write_text("y")
for name in ("file", "dir", "dir/inner"):
    print(name, oct(stat.S_IMODE(os.stat(out / name).st_mode)))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    modes = dict(line.split() for line in result.stdout.splitlines())
    assert modes == {"file": oct(0o666 & ~mask), "dir": oct(0o777 & ~mask),
                     "dir/inner": oct(0o666 & ~mask)}


def test_overwrite_false_refuses_and_keeps_the_old_file(tmp_path, umask_must_not_change):
    target = tmp_path / "results.json"
    target.write_text("old")
    for content in ("new", b"new", lambda handle: handle.write(b"new")):
        with pytest.raises(OutputExistsError, match="results.json: already exists") as err:
            atomic_write(target, content, overwrite=False)
        assert str(target) in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, JaxcptError)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["results.json"]
    atomic_write(tmp_path / "fresh.json", "new", overwrite=False)   # a new name is fine
    assert (tmp_path / "fresh.json").read_text() == "new"


def test_overwrite_false_without_hard_links(tmp_path, monkeypatch, umask_must_not_change):
    """File systems without hard links: check, then rename (still refuses an existing file)."""
    def no_links(*args, **kwargs):
        raise PermissionError("no hard links here")
    monkeypatch.setattr(os, "link", no_links)
    atomic_write(tmp_path / "a", "one", overwrite=False)
    with pytest.raises(OutputExistsError):
        atomic_write(tmp_path / "a", "two", overwrite=False)
    assert (tmp_path / "a").read_text() == "one" and listing(tmp_path) == ["a"]


@pytest.mark.parametrize("overwrite", [True, False])
def test_failing_writer_leaves_nothing_behind(tmp_path, overwrite, umask_must_not_change):
    def broken(handle):
        handle.write(b"half of it")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "new.npz", broken, overwrite=overwrite)
    assert listing(tmp_path) == []
    (tmp_path / "old.npz").write_bytes(b"whole")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "old.npz", broken, overwrite=True)
    assert (tmp_path / "old.npz").read_bytes() == b"whole"
    assert listing(tmp_path) == ["old.npz"]


def test_parents(tmp_path, umask_must_not_change):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "a" / "b" / "f", "x")
    atomic_write(tmp_path / "a" / "b" / "f", "x", parents=True)
    assert (tmp_path / "a" / "b" / "f").read_text() == "x"


def test_write_json_format(tmp_path, umask_must_not_change):
    path = tmp_path / "r.json"
    write_json(path, {"ü": [1, 2], "x": np.float32(0.5)}, default=float)
    assert path.read_text(encoding="utf-8") == '{\n  "ü": [\n    1,\n    2\n  ],\n  "x": 0.5\n}\n'
    with pytest.raises(TypeError):   # no default: numpy scalars are refused, nothing written
        write_json(tmp_path / "s.json", {"x": np.float32(0.5)})
    assert listing(tmp_path) == ["r.json"]
    with pytest.raises(OutputExistsError):
        write_json(path, {}, overwrite=False)
    assert json.loads(path.read_text()) == {"ü": [1, 2], "x": 0.5}


def test_remote_branch_through_epath(tmp_path, monkeypatch, umask_must_not_change):
    """gs:// paths go through etils.epath (tmp sibling + rename): exercised on a local epath."""
    from etils import epath

    monkeypatch.setattr(files, "_is_remote", lambda path: True)
    target = epath.Path(tmp_path) / "run.json"
    write_json(target, {"a": 1})
    atomic_write(target, "replaced")
    assert target.read_text() == "replaced"
    with pytest.raises(OutputExistsError):
        atomic_write(target, "again", overwrite=False)

    def broken(handle):
        raise RuntimeError("lost connection")
    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "replaced" and listing(tmp_path) == ["run.json"]


def test_epath_local_paths_take_the_local_branch(tmp_path, umask_must_not_change):
    from etils import epath

    assert not files._is_remote(epath.Path(tmp_path) / "x")
    assert files._is_remote("gs://bucket/run/x") and files._is_remote(epath.Path("gs://b/x"))
    atomic_write(epath.Path(tmp_path) / "x", "local")
    assert mode(tmp_path / "x") == files.file_mode()


def test_fresh_output_dir_rules(tmp_path, umask_must_not_change):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):   # a failure leaves nothing behind
        with fresh_output_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert listing(tmp_path) == []
    out.mkdir()   # an empty directory may be filled
    with fresh_output_dir(out) as tmp:
        (tmp / "done").write_text("x")
    assert listing(out) == ["done"] and listing(tmp_path) == ["out"]
    for refused in (lambda: ensure_new_dir(out), lambda: fresh_output_dir(out).__enter__()):
        with pytest.raises(JaxcptError, match="already exists and is not empty"):
            refused()
    assert listing(out) == ["done"] and listing(tmp_path) == ["out"]


def test_fresh_output_dir_replace_swaps_whole(tmp_path, umask_must_not_change):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale").write_text("old")
    with pytest.raises(RuntimeError):
        with fresh_output_dir(out, replace=True) as tmp:
            (tmp / "new").write_text("x")
            raise RuntimeError("boom")
    assert listing(out) == ["stale"] and listing(tmp_path) == ["out"]
    with fresh_output_dir(out, replace=True) as tmp:
        (tmp / "new").write_text("x")
    assert listing(out) == ["new"] and listing(tmp_path) == ["out"]


def test_the_package_calls_no_umask_and_writes_no_temp_files_by_hand():
    """jaxcpt.files is the only module that creates temporary files or renames them into place."""
    pattern = ("os.umask", "mkstemp", "mkdtemp", "os.replace", "os.rename")
    offenders = [f"{path.relative_to(REPO)}: {needle}"
                 for path in sorted((REPO / "jaxcpt").rglob("*.py")) if path.name != "files.py"
                 for needle in pattern if needle in path.read_text(encoding="utf-8")]
    assert offenders == []


# --- the one tokenizer loader -----------------------------------------------------------------

def test_tokenizer_loader_contract(tmp_path):
    from helpers import xlmr_tokenizer

    from jaxcpt.tokenizer_loader import cached_tokenizer, load_tokenizer

    marker = object()
    assert load_tokenizer(marker) is marker   # an object passes through
    with pytest.raises(JaxcptError, match="tokenizer directory not found") as err:
        load_tokenizer(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JaxcptError) as err:
        load_tokenizer(tmp_path / "empty")
    assert str(err.value).startswith(f"{tmp_path / 'empty'}: cannot load a tokenizer")
    assert "\n" not in str(err.value)
    directory = xlmr_tokenizer(["▁a", "▁b", "c"], tmp_path / "tok")
    assert len(load_tokenizer(directory)) == len(load_tokenizer(str(directory)))
    first = cached_tokenizer(str(directory))
    assert cached_tokenizer(str(directory)) is first   # the data side's repeated loads share one
    assert load_tokenizer(str(directory)) is not first


def test_eval_loader_keeps_its_no_tokenizer_message(tmp_path):
    from jaxcpt.eval.loading import _load_tokenizer

    (tmp_path / "model").mkdir()
    with pytest.raises(JaxcptError, match="no tokenizer files"):
        _load_tokenizer(tmp_path / "model", tmp_path / "model")
    with pytest.raises(JaxcptError, match="no tokenizer files"):
        _load_tokenizer(None, tmp_path / "model")
