"""engine/devices.py: the device `train.device` names, and whether the CPU kernels that will run do bf16 natively."""

from __future__ import annotations

import pytest
import torch

from resnetlab.engine import devices
from resnetlab.errors import UserError


@pytest.mark.parametrize(("flags", "capability", "env", "native"), [
    ({"avx512f", "avx512_bf16"}, "AVX512", {}, True),
    ({"amx_bf16"}, "AVX512", {"ONEDNN_MAX_CPU_ISA": "avx512_core_amx"}, True),
    ({"avx512f", "avx512_bf16"}, "AVX512", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # oneDNN would emulate bf16
    ({"avx512f", "avx512_bf16"}, "AVX2", {}, False),  # ATEN_CPU_CAPABILITY=avx2
    ({"avx2", "fma"}, "AVX2", {}, False),  # an AVX2-only EPYC
    ({"avx512f"}, "AVX512", {}, False),  # AVX-512 without bf16
])
def test_bf16_is_native_only_where_the_kernels_that_run_have_it(flags, capability, env, native):
    assert devices.native_bf16_cpu(flags, capability, env) is native


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    def machine(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    machine(cuda=True, mps=True)
    assert devices.select_device("auto", local_rank=3) == torch.device("cuda", 1)
    machine(cuda=False, mps=True)
    assert devices.select_device("auto") == torch.device("mps")
    machine(cuda=False, mps=False)
    assert devices.select_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA"):
        devices.select_device("cuda")
    with pytest.raises(UserError, match="MPS"):
        devices.select_device("mps")
