"""One trainer per MODEL_DIR: a lock file created atomically, naming its holder.

`MODEL_DIR/train.lock` holds {"host", "pid", "started", "token"}. Local and mounted file systems:
the file is created with O_CREAT|O_EXCL. `gs://` directories: the lock object is written with a
generation-match precondition of 0 (the write fails if the object exists) when
google-cloud-storage is installed; without it the run goes on with a one-line warning that the
directory is unlocked. A lock left by a dead process on this host (SIGKILL, power loss) is taken
over; a lock held by another host is reported with how to remove it. On a pod only process 0 takes
the lock (the caller decides).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid

from etils import epath

from jaxcpt.errors import JaxcptError

LOCK_NAME = "train.lock"


class RunLocked(JaxcptError):
    pass


def _holder_text(holder: dict) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid apart); None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    recorded = holder.get("process_start")
    return recorded is None or _process_start(pid) in (None, recorded)


def _stale(holder: dict) -> bool:
    return holder.get("host") == socket.gethostname() and not _alive(holder)


class _LocalLock:
    def __init__(self, path: epath.Path):
        self.path = str(path)

    def create(self, text: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True

    def read(self) -> tuple[dict | None, object]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(text), (stat.st_ino, stat.st_mtime_ns)
        except json.JSONDecodeError:  # being written right now, or damaged: not ours to judge
            return {"host": "?", "pid": -1, "started": 0, "unreadable": True}, None

    def remove(self, version) -> None:
        """Remove the lock if it is still the file we judged stale (another process may have
        taken it over in between: then leave theirs alone)."""
        try:
            stat = os.stat(self.path)
            if version is None or (stat.st_ino, stat.st_mtime_ns) == version:
                os.remove(self.path)
        except FileNotFoundError:
            pass


class _GcsLock:
    """The lock as one GCS object; `client` is a google.cloud.storage.Client (or a test fake)."""

    def __init__(self, url: str, client):
        bucket, _, name = url[len("gs://"):].partition("/")
        self.blob_name = name
        self.bucket = client.bucket(bucket)

    def create(self, text: str) -> bool:
        try:
            self.bucket.blob(self.blob_name).upload_from_string(text, if_generation_match=0)
        except Exception as err:
            if getattr(err, "code", None) == 412 or type(err).__name__ == "PreconditionFailed":
                return False
            raise
        return True

    def read(self) -> tuple[dict | None, object]:
        blob = self.bucket.get_blob(self.blob_name)
        if blob is None:
            return None, None
        try:
            return json.loads(blob.download_as_text()), blob.generation
        except json.JSONDecodeError:
            return {"host": "?", "pid": -1, "started": 0, "unreadable": True}, blob.generation

    def remove(self, version) -> None:
        try:
            self.bucket.blob(self.blob_name).delete(if_generation_match=version)
        except Exception as err:
            if getattr(err, "code", None) not in (404, 412):
                raise


def _gcs_client():
    try:
        from google.cloud import storage
    except ImportError:
        return None
    return storage.Client()


class RunLock:
    """`with RunLock(model_dir):` one trainer at a time; released on exit (not on SIGKILL)."""

    def __init__(self, model_dir, *, gcs_client=None):
        self.model_dir = epath.Path(model_dir)
        self.url = os.fspath(self.model_dir / LOCK_NAME)
        self.token = uuid.uuid4().hex
        self.backend = None
        if self.url.startswith("gs://"):
            client = gcs_client if gcs_client is not None else _gcs_client()
            if client is not None:
                self.backend = _GcsLock(self.url, client)
        elif "://" not in self.url:
            self.backend = _LocalLock(self.model_dir / LOCK_NAME)

    def acquire(self) -> "RunLock":
        if self.backend is None:
            print(f"jaxcpt train: warning: {self.model_dir} is not locked against a second "
                  "trainer (install google-cloud-storage to lock gs:// run directories)",
                  file=sys.stderr, flush=True)
            return self
        if self.model_dir.as_posix().find("://") < 0:
            self.model_dir.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        text = json.dumps({"host": socket.gethostname(), "pid": pid, "started": time.time(),
                           "process_start": _process_start(pid), "token": self.token})
        for _ in range(3):
            if self.backend.create(text):
                return self
            holder, version = self.backend.read()
            if holder is None:
                continue  # released between our two calls: try again
            if holder.get("unreadable"):
                raise RunLocked(f"{self.url}: a lock file that cannot be read; another trainer "
                                "may be starting. If none is, delete the file and start again")
            if not _stale(holder):
                raise RunLocked(f"{self.model_dir}: another trainer holds this run "
                                f"({_holder_text(holder)}); wait for it or stop it. If it is gone "
                                f"(e.g. its machine was lost), delete {self.url}")
            print(f"jaxcpt train: taking over the lock of a dead trainer ({_holder_text(holder)})",
                  file=sys.stderr, flush=True)
            self.backend.remove(version)
        raise RunLocked(f"{self.url}: could not take the lock (several trainers are starting at "
                        "once?); start one trainer per MODEL_DIR")

    def release(self) -> None:
        if self.backend is None:
            return
        holder, version = self.backend.read()
        if holder is not None and holder.get("token") == self.token:
            self.backend.remove(version)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
