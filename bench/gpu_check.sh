#!/usr/bin/env bash
# The GPU checks, as one script for a session with a lent GPU (about 6 minutes on one H200):
#   1. the machine: GPU, driver, CPU kind, torch;
#   2. bench/paper_schedule.py: the paper's ResNet-20 schedule, 64k iterations of batch 128 on CIFAR-shaped data,
#      with bf16 and torch.compile (Goal: at most 3 minutes), end to end;
#   3. bench/throughput.py --device cuda: the engine's training step against the first tutorial's loop on the same
#      GPU (Goal: 5x);
#   4. the CUDA tests (pytest -m cuda: GPU batches equal CPU ones, bf16 and compile by default, exact resume,
#      GPU evaluation equal to the CPU's; SyncBatchNorm needs two GPUs and skips on one).
# The goals come first, so that a session short of device time still gets them.
# Run from the repository root: `bash bench/gpu_check.sh`. Output goes to stdout and, with $OUT set, to $OUT/.
# Where the machine lacks a package the project needs (torchinfo), wheels in .whl/ are installed to /tmp/site.
set -uo pipefail
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ! $PY -c "import torchinfo" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
section() { echo; echo "== $1 ($(date +%T))"; }

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -E "^Model name|^CPU\(s\)"
lscpu | grep -o -w -E "avx512f|avx512_bf16|amx_bf16|avx2" | sort -u | tr '\n' ' '; echo
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'cpu kernels', torch.backends.cpu.get_cpu_capability())"

section "the paper's ResNet-20 schedule: 64k iterations of batch 128, bf16 + compile"
$PY bench/paper_schedule.py --device cuda --iters 64000 --set train.compile=true 2>&1 | tee "$LOG/paper_schedule.log" | tail -6

section "throughput: engine vs the first tutorial's loop on the GPU"
$PY bench/throughput.py --device cuda --reps 3 --iters 60 --warmup 25 --images 20000 2>&1 | tee "$LOG/throughput.log" | tail -12

section "CUDA tests"
$PY -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$LOG/cuda_tests.log" | tail -15

section "done"
