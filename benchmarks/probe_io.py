"""What the CPU quality probes share: SmolLM2 with the SQuAD token ids they read, and the JSON they write (their
arguments, their rows, torch's version and the time, UTC)."""

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


def smollm2_squad(threads: int):
    """``(model, tokenizer, ids)``: SmolLM2 on ``threads`` CPU threads and the whole SQuAD text as token ids."""
    from million.data import load_text
    from million.models import load_model

    torch.set_num_threads(threads)
    model, tok = load_model("smollm2")
    return model, tok, tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
