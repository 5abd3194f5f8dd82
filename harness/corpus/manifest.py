"""sha256 manifest of every corpus file (``sha256sum -c`` compatible)."""

from __future__ import annotations

from pathlib import Path

from harness.corpus.layout import MANIFEST_NAME
from harness.errors import HarnessError
from harness.fsutil import sha256_file, write_text


def _corpus_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.name == MANIFEST_NAME:
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def write_manifest(root: Path) -> Path:
    """Write ``manifest.sha256`` (sha256 and path of every corpus file, sorted) under ``root``; returns its path."""
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in _corpus_files(root)]
    path = root / MANIFEST_NAME
    write_text(path, "\n".join(lines) + "\n")
    return path


def check_manifest(root: Path) -> int:
    """Verify every file of the manifest; return the number of files checked.

    Raises :class:`HarnessError` naming the first missing, corrupt or unlisted file.
    """
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if not root.is_dir():
        raise HarnessError(f"corpus directory {root} does not exist; build it with `harness corpus build --out {root}`")
    if not manifest.exists():
        raise HarnessError(f"{root} has no {MANIFEST_NAME}: the build did not finish; re-run `harness corpus build --out {root}`")
    expected: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise HarnessError(f"{manifest}:{n} is malformed; rebuild the corpus")
        expected[rel] = digest
    for rel, digest in expected.items():
        path = root / rel
        if not path.is_file():
            raise HarnessError(f"corpus file missing: {path}; delete the corpus folder and rebuild it with `harness corpus build`")
        if sha256_file(path) != digest:
            raise HarnessError(f"corpus file corrupt (sha256 mismatch): {path}; delete the corpus folder and rebuild it with `harness corpus build`")
    extra = [p.relative_to(root).as_posix() for p in _corpus_files(root) if p.relative_to(root).as_posix() not in expected]
    if extra:
        raise HarnessError(f"file not in the manifest: {root / extra[0]}; remove it or rebuild the corpus")
    return len(expected)
