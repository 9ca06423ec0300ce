"""The compiled CPU pass (effattn/fused_cpu.py) against the torch ops it stands in for; the
numerics of both are tested against the reference in test_effective.py."""

import subprocess
import sys
from pathlib import Path

import torch

import effattn.effective
from effattn import decompose_attention
from tests.test_effective import padded_batch, use_torch_ops


def test_both_cpu_paths_agree(monkeypatch):
    assert effattn.effective.fused_bases is not None, "numba is missing: pip install -r requirements.txt"
    attn, values, mask = padded_batch([48, 47, 40, 33, 32, 12], heads=4, dtype=torch.float32)
    compiled = decompose_attention(attn, values, mask)
    use_torch_ops(monkeypatch)
    torch_ops = decompose_attention(attn, values, mask)
    assert torch.equal(compiled.rank, torch_ops.rank)
    assert (compiled.attn_eff - torch_ops.attn_eff).abs().max() < 1e-6


def test_the_compiled_pass_leaves_torchs_thread_count_alone():
    # in a fresh process: numba starts its thread pool on first use, once per process
    script = ("import torch; torch.set_num_threads(1); from effattn import effective_attention; "
              "a = torch.softmax(torch.randn(2, 3, 40, 40), -1); "
              "effective_attention(a, torch.randn(2, 3, 40, 32)); print(torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.split()[-1] == "1"
