"""Every file and directory jaxcpt writes, written atomically with the user's default modes.

Atomic: an output appears whole or not at all (a crash, a full disk or an error half-way leaves the
old file, or nothing, behind), because a file is written to a temporary sibling and renamed over
its target, and a directory is built in a temporary sibling and renamed into place. The commands
rely on it: "the output exists" means "it was finished" (the demo skips finished stages on a
re-run, a resumed run trusts its metrics and run files).

Modes: mkstemp/mkdtemp (and some writers, e.g. safetensors) create owner-only entries, so they are
chmod-ed before publishing to what open()/mkdir would have given under the user's umask. The umask
is read from /proc/self/status, never set: `os.umask(0)` + restore is a process-wide change that
races with threads creating files at the same time (the OFA code runs threads), which would then get
world-writable modes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO, Union

from jaxcpt.errors import JaxcptError

Content = Union[str, bytes, bytearray, memoryview, Callable[[BinaryIO], object]]
_DEFAULT_UMASK = 0o022


@functools.cache
def umask() -> int:
    """The process umask, read once without changing it (Linux: /proc/self/status; else 0o022)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    return _DEFAULT_UMASK


def file_mode() -> int:
    """Mode of a new regular file: 0o666 less the umask (what open() would create)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a new directory: 0o777 less the umask (what mkdir would create)."""
    return 0o777 & ~umask()


def _is_remote(path) -> bool:
    return "://" in str(path)   # gs://, s3://, ...: written through etils.epath


def _write_content(handle: BinaryIO, content: Content) -> None:
    if isinstance(content, str):
        handle.write(content.encode("utf-8"))
    elif isinstance(content, (bytes, bytearray, memoryview)):
        handle.write(content)
    elif callable(content):
        content(handle)
    else:
        raise TypeError(f"atomic_write: content must be str, bytes or a callable, "
                        f"not {type(content).__name__}")


class OutputExistsError(JaxcptError, FileExistsError):
    """atomic_write(..., overwrite=False) found its target (nothing was replaced)."""


def _exists_error(path) -> OutputExistsError:
    return OutputExistsError(f"{path}: already exists; not overwritten")


def atomic_write(path, content: Content, *, overwrite: bool = True, parents: bool = False) -> None:
    """Write `content` (str as UTF-8, bytes, or a callable writing to a binary handle, e.g.
    `lambda f: np.savez(f, **arrays)`) to `path` so that a reader (or a crash) sees the old file
    or the new one, never half of one. A failing write leaves neither the target nor a temporary
    file behind.

    Local paths: mkstemp beside the target, chmod to `file_mode()`, rename. Remote paths (gs://...,
    as `etils.epath.Path` or str): a temporary sibling renamed by epath (as atomic as the store
    allows). `overwrite=False`: an existing target raises OutputExistsError naming it and is kept
    (locally race-free: the new file is hard-linked into place, which fails if the name exists).
    `parents`: create missing parent directories first.
    """
    remote = _is_remote(path)
    if remote:
        from etils import epath

        path = epath.Path(path)
    else:
        path = pathlib.Path(os.fspath(path))
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise _exists_error(path)
    if remote:
        _write_remote(path, content)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_content(handle, content)
        os.chmod(tmp, file_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _publish_new(tmp: str, path: pathlib.Path) -> None:
    """Move `tmp` to `path` only if `path` does not exist (the caller removes `tmp`)."""
    try:
        os.link(tmp, path)   # atomic "create if absent"; the caller's unlink drops the temp name
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:   # no hard links on this file system: check, then rename
        if path.exists():
            raise _exists_error(path) from None
        os.replace(tmp, path)


def _write_remote(path, content: Content) -> None:
    """epath: write a uniquely named sibling, then rename it over `path`."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with tmp.open("wb") as handle:
            _write_content(handle, content)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(Exception):
            if tmp.exists():
                tmp.unlink()
        raise


def write_json(path, obj, *, overwrite: bool = True, parents: bool = False,
               default: Callable | None = None, sort_keys: bool = False) -> None:
    """`obj` as JSON (indent 2, UTF-8 text kept as is, trailing newline), via `atomic_write`.

    `default`: json's fallback for other objects (e.g. `float` for numpy scalars)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=default, sort_keys=sort_keys)
    atomic_write(path, text + "\n", overwrite=overwrite, parents=parents)


def ensure_new_dir(out) -> None:
    """Refuse an existing non-empty output path (checked before any expensive work)."""
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise JaxcptError(f"{out}: already exists and is not empty; choose a new output directory")


@contextlib.contextmanager
def fresh_output_dir(out, *, replace: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary sibling of `out` and move it into place only if the block succeeds.

    Refuses an existing non-empty `out`, so nothing already written is lost or overwritten, and a
    failure leaves no half-written directory behind. `replace=True` (the caller decided the old
    directory may go) swaps an existing `out` for the new one instead: it is moved aside, the new
    one renamed in, then the old one removed, so a reader never sees a mix of both and a failure
    leaves the old one as it was. Entries are published with `file_mode()` / `dir_mode()`.
    """
    out = pathlib.Path(out)
    if not replace:
        ensure_new_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        set_default_modes(tmp)
        if replace and out.exists():
            _swap(tmp, out)
        else:
            if out.exists():
                out.rmdir()   # empty (checked above); a file or content that appeared since: error
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(new: pathlib.Path, out: pathlib.Path) -> None:
    aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old = aside / "old"
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def set_default_modes(root: pathlib.Path) -> None:
    """chmod `root` and everything below it (symlinks excepted) to `dir_mode()` / `file_mode()`."""
    root = pathlib.Path(root)
    os.chmod(root, dir_mode())
    for entry in root.rglob("*"):
        if not entry.is_symlink():
            os.chmod(entry, dir_mode() if entry.is_dir() else file_mode())
