"""Atomic writers: readers see the old content or the whole new one, modes follow the umask,
concurrent writers never delete each other's temporaries."""

import os
import stat
import threading

import pytest

from harness import fsutil


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_dir_gives_every_file_the_users_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        with fsutil.atomic_dir(tmp_path / "model") as tmp:
            secret = tmp / "weights.bin"
            secret.write_bytes(b"x")
            os.chmod(secret, 0o600)  # as a library writing through its own temporary file does
            (tmp / "sub").mkdir()
            (tmp / "sub" / "a.txt").write_text("a")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model") == dir_mode
    assert _mode(tmp_path / "model" / "weights.bin") == file_mode
    assert _mode(tmp_path / "model" / "sub") == dir_mode
    assert _mode(tmp_path / "model" / "sub" / "a.txt") == file_mode


def test_atomic_dir_replaces_as_a_whole_and_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "ckpt"
    with fsutil.atomic_dir(dest) as tmp:
        (tmp / "old_only.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_dir(dest) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["old_only.txt"]
    with fsutil.atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries left behind


def test_concurrent_writers_of_the_same_path_both_succeed(tmp_path):
    dest, errors = tmp_path / "shard", []

    def write(k: int) -> None:
        try:
            for _ in range(20):
                with fsutil.atomic_dir(dest, replace=False) as tmp:
                    (tmp / "layer.npy").write_bytes(b"same content")
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (dest / "layer.npy").read_bytes() == b"same content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard"]
