"""The one place that decides the device, the CPU thread count and the mixed-precision dtype.

What the machine offers (CUDA, MPS, the CPU's cores and whether its kernels run bf16 natively) and what a run's
settings (`train.device`, `train.threads`, `train.amp`, `train.compile`) become on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from resnetlab.errors import UserError


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """The device for `train.device`: auto = cuda, then mps, then cpu; a missing one is a UserError."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise UserError("train.device=cuda but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not mps:
        raise UserError("train.device=mps but the MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`, or None for full precision.

    auto = bf16 on CUDA GPUs that support it, fp16 on older ones (with a GradScaler), bf16 on CPUs whose kernels
    run it natively (`native_bf16_cpu`), float32 elsewhere: a CPU that emulates bf16 runs autocast slower than
    float32.
    """
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and native_bf16_cpu() else None
    return torch.bfloat16 if mode == "bf16" else torch.float16


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) that still include its native bf16 kernels (AVX512_BF16 or AMX).
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
                     "ALL", "DEFAULT")


def native_bf16_cpu(flags: set[str] | None = None, capability: str | None = None,
                    environ: dict[str, str] | None = None) -> bool:
    """Whether the CPU kernels that will actually run do bf16 natively (AVX512_BF16 or AMX), not emulated.

    All three must hold: the CPU has the instructions (its flags), PyTorch's own kernels are allowed AVX-512
    (`torch.backends.cpu.get_cpu_capability()`, which ATEN_CPU_CAPABILITY=avx2 lowers), and oneDNN's are allowed
    an ISA with bf16 (ONEDNN_MAX_CPU_ISA=AVX2 leaves the flags saying bf16 while oneDNN emulates it). Measured on
    an AMD EPYC with avx512_bf16: bf16 matmuls at 2.5x the fp32 rate, and resnet20 training steps at 1.4x.
    """
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    env = os.environ if environ is None else environ
    limit = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    hardware = "avx512_bf16" in flags or "amx_bf16" in flags
    return hardware and capability.upper().startswith("AVX512") and limit in _ONEDNN_BF16_ISAS


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def amp_name(dtype: torch.dtype | None) -> str:
    """How a resolved autocast dtype is written in summaries and provenance: bf16, fp16 or off."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off") if dtype is not None else "off"


def use_compile(mode: bool | str, device: torch.device) -> bool:
    """Whether to torch.compile the model for `train.compile` (auto = on CUDA only; a mode's name = on).

    On CUDA, compiling fuses the BatchNorm/ReLU/add kernels and pays back its warm-up within minutes. On a
    2-core AMD EPYC CPU it did not: ResNet-20 took about the same CPU time per image compiled as eager
    (oneDNN's convolutions are 80% of a step either way) after 15-100 s of compilation (bench/throughput.py).
    """
    if mode == "auto":
        return device.type == "cuda"
    return bool(mode)


def compile_mode(mode: bool | str) -> str | None:
    """The `torch.compile` mode of `train.compile`: reduce-overhead or max-autotune, else None (torch's default)."""
    return mode if mode in ("reduce-overhead", "max-autotune") else None


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads slow convolutions down)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return available
    cores = set()
    physical = core = ""
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not key and core:
            cores.add((physical, core))
            physical = core = ""
    return max(1, min(available, len(cores) or available))


def configure_threads(threads: int, local_world_size: int = 1) -> int:
    """Set torch's intra-op threads (0 = physical cores shared among the local processes); returns it."""
    n = threads or max(1, physical_cores() // max(1, local_world_size))
    torch.set_num_threads(n)
    return n
