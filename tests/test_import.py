"""``import million`` (and its ops and cache modules) needs neither CUDA nor triton: triton is imported
lazily, and nothing initializes CUDA at import time. Checked in a fresh interpreter."""

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{imports}
import torch
print(json.dumps({{"triton": "triton" in sys.modules, "cuda_init": torch.cuda.is_initialized()}}))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import million; import million.ops; import million.cache",
        "import million; million.PQConfig(head_dim=64, M=32); million.Codebooks; million.MillionCache",
        "import million.cli; million.cli.build_parser()",
    ],
    ids=["million_ops_cache", "lazy_attributes", "cli_parser"],
)
def test_import_leaves_triton_and_cuda_alone(imports):
    r = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout.strip().splitlines()[-1])
    assert state == {"triton": False, "cuda_init": False}, state


def test_cpu_ops_do_not_import_triton():
    code = """
import sys, torch
import million.ops as ops
c = torch.randn(1, 4, 16, 4)
codes = ops.pq_encode(torch.randn(1, 2, 5, 16), c)
q = torch.randn(1, 2, 16)
ops.pq_decode_attention(q, codes, codes, c, c, torch.tensor([5], dtype=torch.int32), torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16), torch.tensor([0], dtype=torch.int32))
assert "triton" not in sys.modules, "CPU ops imported triton"
assert not torch.cuda.is_initialized()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
