"""The JSON a CPU quality probe writes: its arguments, its rows, torch's version and the time (UTC)."""

from __future__ import annotations

import json
import time

import torch


def write_rows(path: str | None, args, rows: list) -> None:
    """``{"args", "rows", "torch", "date_utc"}`` into ``path`` (nothing when ``path`` is None or empty)."""
    if not path:
        return
    with open(path, "w") as f:
        json.dump({"args": vars(args), "rows": rows, "torch": torch.__version__,
                   "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, f, indent=1)
