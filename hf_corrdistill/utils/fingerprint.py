"""Fingerprints of files: how an evaluation recognises the weights it scored, and the Hub card the same weights."""

import hashlib
from pathlib import Path


def file_digest(paths: list[Path]) -> str:
    """The first 16 hex digits of the SHA-256 of the files' names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
