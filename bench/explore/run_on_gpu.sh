#!/usr/bin/env bash
# The measurements behind fmnist-fast's choices (issue 15) and degradation-fmnist's sizing (issue 17), run on a
# GPU machine in one go (about 6 minutes on one H200), with the numeric tests on that machine's CPU beside them.
# Needs Fashion-MNIST in .devdata/fashion-mnist (the four IDX .gz files). Output: $OUT/*.txt and *.log.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/explore}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ! $PY -c "import torchinfo" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
DATA="$PWD/.devdata/fashion-mnist"
lscpu | grep -E "^Model name" > "$OUT/cpu.txt"; lscpu | grep -o -w -E "avx512f|avx512_bf16|amx_bf16" | sort -u >> "$OUT/cpu.txt"
(  # the numeric tests on this machine's CPU, natively and with AVX2 kernels only; then CPU bf16 against fp32
  $PY -m pytest -q -p no:cacheprovider tests/distributed tests/engine/test_resume.py tests/engine/test_techniques.py
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $PY -m pytest -q -p no:cacheprovider tests/distributed \
      tests/engine/test_resume.py tests/engine/test_techniques.py
  for amp in auto off; do
    $PY bench/throughput.py --device cpu --reps 3 --iters 10 --warmup 3 --images 4000 --set train.threads=8 --set train.amp=$amp
  done
) > "$OUT/cpu.log" 2>&1 &
$PY bench/parallel_runs.py bench/explore/amp_seeds.yaml --out /tmp/amp --jobs 6 --data-dir "$DATA" > "$OUT/amp.txt" 2>&1
$PY bench/parallel_runs.py bench/explore/fmnist_techniques.yaml --out /tmp/tech --jobs 9 --data-dir "$DATA" \
    --val-tta shift > "$OUT/tech.txt" 2>&1
$PY bench/parallel_runs.py bench/explore/degradation_sizing.yaml --out /tmp/deg --jobs 12 --data-dir "$DATA" \
    > "$OUT/deg.txt" 2>&1
tar czf "$OUT/deg_runs.tgz" -C /tmp deg --exclude='*.pt' --exclude='tb' 2>/dev/null
wait
tail -3 "$OUT"/*.txt "$OUT/cpu.log"
