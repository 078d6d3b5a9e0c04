#!/usr/bin/env bash
# The GPU checks, as one script for a session with a lent GPU (about 6 minutes on one H200 for sections 1-4;
# section 5, added by issue 25, has not been run: that session had no GPU):
#   1. the machine: GPU, driver, CPU kind, torch;
#   2. bench/paper_schedule.py: the paper's ResNet-20 schedule, 64k iterations of batch 128 on CIFAR-shaped data,
#      with bf16 and torch.compile (Goal: at most 3 minutes), end to end;
#   3. bench/throughput.py --device cuda: the engine's training step against the first tutorial's loop on the same
#      GPU (Goal: 5x);
#   4. the CUDA tests (pytest -m cuda: GPU batches equal CPU ones, bf16 and compile by default, exact resume,
#      GPU evaluation equal to the CPU's; SyncBatchNorm needs two GPUs and skips on one);
#   5. (issue 25) the fast recipes on the GPU with bf16 + compile: cifar10-fast's whole schedule on CIFAR-shaped
#      data (Goal: 10 epochs of 50k images within 10 s), also with airbench94's widths, and fmnist-fast when
#      Fashion-MNIST is on the machine (.devdata/fashion-mnist carried, or /usr/share/datasets/fashion-mnist);
#      the paper's schedule again with compile mode reduce-overhead (CUDA graphs; Goal: 64k iterations in 3 min).
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

section "cifar10-fast (airbench, 10 epochs of batch 512) on CIFAR-shaped data, bf16 + compile"
$PY bench/paper_schedule.py --recipe cifar10-fast --iters 0 --device cuda --set train.amp=bf16 \
    --set train.compile=true 2>&1 | tee "$LOG/cifar10_fast.log" | tail -3
$PY bench/paper_schedule.py --recipe cifar10-fast --iters 0 --device cuda --set train.amp=bf16 \
    --set train.compile=true --set 'model.options={widths: [64, 256, 256]}' 2>&1 | tee "$LOG/cifar10_fast_wide.log" | tail -3

section "fmnist-fast on the GPU (accuracy and time; needs Fashion-MNIST on this machine)"
FMNIST=""
for d in "$PWD/.devdata/fashion-mnist" /usr/share/datasets/fashion-mnist; do [ -d "$d" ] && FMNIST=$d && break; done
if [ -n "$FMNIST" ]; then
  $PY -m resnetlab train --recipe fmnist-fast --data-dir "$FMNIST" --device cuda --set train.compile=true \
      --out /tmp/gpu_fmnist_fast --quiet 2>&1 | tail -2
  $PY -c "import json; s=json.load(open('/tmp/gpu_fmnist_fast/summary.json')); print({k: s[k] for k in ('test_acc', 'best_val_acc', 'train_time_s', 'wall_time_s', 'images_per_s', 'amp', 'compile')})" | tee "$LOG/fmnist_fast.txt"
else
  echo "no Fashion-MNIST here: skipped"
fi

section "the paper's ResNet-20 schedule with compile mode reduce-overhead (CUDA graphs)"
$PY bench/paper_schedule.py --device cuda --iters 64000 --set train.compile=reduce-overhead 2>&1 \
    | tee "$LOG/paper_schedule_graphs.log" | tail -4

section "CUDA tests"
$PY -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$LOG/cuda_tests.log" | tail -15

section "done"
