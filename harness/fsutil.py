"""Atomic file and folder writes: readers never see a half-written file, and two processes
writing the same thing never break each other.

Every temporary name is unique (host, process id and a random part), so concurrent writers
never share or delete each other's temporaries; a leftover of a killed writer on this host
is recognised by its dead process id and removed. Files are created with the user's umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError

_HOST = socket.gethostname().replace(".", "-")[:32] or "host"
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock: os.umask has no getter)."""
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temp_prefix(name: str) -> str:
    return f".{name}.{_HOST}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove temporaries of ``name`` left in ``folder`` by dead writers on this host."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:  # .NAME.HOST.PID.RANDOM.tmp[.suffix]
        if not entry.name.startswith(f".{name}.") or ".tmp" not in entry.name:
            continue
        rest = entry.name[len(name) + 2:].split(".")
        if len(rest) < 3 or rest[0] != _HOST or not rest[1].isdigit() or _pid_alive(int(rest[1])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def require_writable_dir(path: Path, what: str) -> Path:
    """Check, before any work, that files can be created in ``path`` (or, when it does not exist
    yet, in its nearest existing parent, so that writers can create it later); one-line
    HarnessError otherwise. Creates nothing, so a run refused later leaves no empty folder."""
    path = Path(path)
    probe_dir = path
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise HarnessError(f"{what} {path} is not a directory" if probe_dir == path else
                           f"{what} {path} cannot be created: {probe_dir} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix("write-check"), suffix=".tmp", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = path if probe_dir == path else f"{path} (checked in {probe_dir})"
        raise HarnessError(f"{what} {where} is not writable ({exc.strerror}); choose another location") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so that writers which
    choose a format from the extension (soundfile, numpy) still work.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create directory {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise HarnessError(f"output directory {path.parent} is not writable; choose another --out")
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp" + (suffix or path.suffix),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success its files are synced to
    disk and it becomes ``path``, so readers see the old folder (or none) or the complete new one.

    ``replace``: an existing ``path`` is swapped out and removed. Without it, a ``path`` that
    appeared meanwhile (another process wrote the same deterministic content) is kept and
    this copy discarded: first writer wins, nobody fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        mask = current_umask()
        for f in tmp.rglob("*"):  # data on disk before the rename makes the folder visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                # libraries that write through their own temporaries (transformers' safetensors) leave 0600
                os.chmod(f, 0o666 & ~mask)
            elif f.is_dir():
                os.chmod(f, 0o777 & ~mask)
        if path.exists():
            if not replace:
                return
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
            os.replace(path, old / "old")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, path)
            except OSError:
                if not (path.exists() and not replace):  # lost a race to an identical writer: fine
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """An advisory exclusive lock (``flock``) on ``path`` for the duration of the block.

    Yields True when held; with ``blocking=False`` yields False at once if another process
    holds it. The lock dies with its process, so a killed holder never blocks anyone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a unique temporary name in the same folder, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def file_stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, None when it cannot be read: the key under which a parse
    of it can be reused within a process (``functools.lru_cache`` on (path, stamp))."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks (constant memory for large weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def default_home() -> Path:
    """Where the harness keeps corpora and caches: $HARNESS_HOME or ~/.cache/harness."""
    env = os.environ.get("HARNESS_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "harness"
