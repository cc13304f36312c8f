"""Classifiers the project ships or trains (torch needed: ``pip install 'rpdetect[eval]'``).

Each factory returns a ``torch.nn.Module`` mapping NORMALISED input to logits, and each module
documents the normalisation (mean/std) to fold into the exported graph.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks: the data provenance recorded with trained
    weights (a shared tar is several hundred MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
