"""Prepare the two carry folders for ``benchmarks/gpu_quality.sh`` (the GPU box reaches no network and
one call carries at most 64 MiB): ``.qa`` = first half of the SmolLM2 GGUF + its sha256 + the two texts
(a zip holding only the members million reads) + the gguf wheel; ``.qb`` = the second half.

    python benchmarks/gpu_quality_prep.py     # then add /.qa/ and /.qb/ to .git/info/exclude
    python benchmarks/gpu_quality_prep.py --first-mib 40 --with runs/cb4-default
        # a smaller first half, and codebook folders beside it (they arrive as /tmp/million_q/<name>)
"""

import argparse

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from million.data import _wheel
from million.models import resolve_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-mib", type=float, default=None, help="size of the first part in MiB (default: half)")
    ap.add_argument("--with", dest="extra", action="append", default=[], help="a folder to copy into .qa (repeatable)")
    a = ap.parse_args(argv)
    src = resolve_model("smollm2")
    data = (Path(src.path) / src.gguf_file).read_bytes()
    qa, qb = Path(".qa"), Path(".qb")
    (qa / "cache" / "wheels").mkdir(parents=True, exist_ok=True)
    qb.mkdir(exist_ok=True)
    h = len(data) // 2 if a.first_mib is None else int(a.first_mib * 2**20)
    if not 0 < h < len(data):
        raise SystemExit(f"--first-mib {a.first_mib}: must be between 0 and {len(data) / 2**20:.1f} (the model's size)")
    for d in a.extra:
        if not Path(d).is_dir():
            raise SystemExit(f"--with {d!r} is not a directory")
        shutil.copytree(d, qa / Path(d).name, dirs_exist_ok=True)
    (qa / "model.part0").write_bytes(data[:h])
    (qb / "model.part1").write_bytes(data[h:])
    (qa / "model.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    whl = _wheel()
    with zipfile.ZipFile(whl) as z, zipfile.ZipFile(qa / "cache" / "wheels" / whl.name, "w", zipfile.ZIP_DEFLATED) as o:
        for n in z.namelist():
            if n.endswith(("squad.json", "PaulGrahamEssays.json")):
                o.writestr(n, z.read(n))
    import gguf  # noqa: F401  (the installed version is the one to carry)
    from importlib.metadata import version

    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(qa), f"gguf=={version('gguf')}"], check=True)
    print(f"{qa}: {sum(f.stat().st_size for f in qa.rglob('*') if f.is_file()) / 2**20:.1f} MiB, "
          f"{qb}: {sum(f.stat().st_size for f in qb.rglob('*') if f.is_file()) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
