"""Prepare the two carry folders for ``benchmarks/gpu_quality.sh`` (the GPU box reaches no network and
one call carries at most 64 MiB): ``.qa`` = first half of the SmolLM2 GGUF + its sha256 + the two texts
(a zip holding only the members million reads) + the gguf wheel; ``.qb`` = the second half.

    python benchmarks/gpu_quality_prep.py     # then add /.qa/ and /.qb/ to .git/info/exclude
"""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from million.data import _wheel
from million.models import resolve_model


def main() -> int:
    src = resolve_model("smollm2")
    data = (Path(src.path) / src.gguf_file).read_bytes()
    qa, qb = Path(".qa"), Path(".qb")
    (qa / "cache" / "wheels").mkdir(parents=True, exist_ok=True)
    qb.mkdir(exist_ok=True)
    h = len(data) // 2
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
