"""Shared output of the benchmark scripts: one JSON object on stdout, optionally also written to a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str = "") -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
