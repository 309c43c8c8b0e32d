#!/usr/bin/env bash
# GPU figures of benchmarks/RESULTS.md, in about 4 minutes on one H100 or H200:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]          (default benchmarks/results/gpu)
# The paper's shapes (HuBERT-Base teacher, DistilHuBERT student, 24 x 15.6 s) with random weights: float32, then
# the GPU path (bf16 autocast for the student, loss in float32, teacher in bf16 / fp16 under no_grad), with cuDNN's
# algorithm search, without the teacher's padding mask, with torch.compile. Each prints steps/s, the loss's share of
# the step, the host syncs of one step and, for a half-precision teacher, the loss's relative difference to a
# float32 teacher.
set -euo pipefail
results=${1:-benchmarks/results/gpu}
mkdir -p "$results"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$results/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$results/gpu.txt"
run() {
  local name=$1; shift
  python3 benchmarks/bench_step.py --size paper --device cuda --repeats 10 --output "$results/$name.json" "$@" \
    > /dev/null
  python3 - "$results/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[1]}: {r['steps_per_second']:.2f} steps/s, {r['audio_seconds_per_second']:.0f} audio-s/s, "
      f"loss {100 * r['part_share']['loss']:.1f} % of the step, peak {r['peak_memory_gb']:.1f} GB, "
      f"{r.get('host_syncs_per_step')} host syncs {r.get('host_syncs')}, teacher difference {r.get('teacher_loss_relative_difference')}")
PY
}
run fp32
run bf16 --bf16 --teacher_dtype bfloat16
run bf16-fp16-teacher --bf16 --teacher_dtype float16
run bf16-cudnn --bf16 --teacher_dtype bfloat16 --cudnn_benchmark
run bf16-cudnn-nomask --bf16 --teacher_dtype bfloat16 --cudnn_benchmark --no_teacher_mask
run bf16-cudnn-compile --bf16 --teacher_dtype bfloat16 --cudnn_benchmark --compile
run bf16-cudnn-distilhubert --bf16 --teacher_dtype bfloat16 --cudnn_benchmark --loss distilhubert
