#!/usr/bin/env bash
# The prepared GPU check (docs/gpu_check.md): on a machine with one NVIDIA GPU and no network,
# from a fresh checkout whose venv was installed from pre-downloaded wheels, in under 8 minutes:
#   1. environment  the GPU, torch and CUDA versions
#   2. cuda-tests   pytest -m cuda (mixers on CUDA vs CPU, mamba-ssm kernels vs PyTorch, bf16 steps)
#   3. conversion   MiniLM -> Linformer (specs/quickstart.toml), 200 steps in bf16
#   4. zero-2       the same conversion under DeepSpeed ZeRO-2 on the one GPU, 50 steps in bf16
#   5. scaling      benchmarks/bench_scaling.py up to 32k tokens
#   6. offload      a frozen teacher offloaded to host memory (FSDP2, one process) vs the whole one
# and prints one summary. --dry-run (CI, no GPU): the same stages in their CPU-skippable form
# (the CUDA tests collected and skipped, the conversion spec validated, the bench's options
# parsed), so that the script, its spec overrides and its commands stay valid.
#
#   scripts/gpu_check.sh [--dry-run] [--out DIR]        (PY=path/to/python to choose the venv)
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=full
OUT=runs/gpu-check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry-run ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
ROWS=()
FAILED=0
START=$SECONDS

# record STAGE STATUS SECONDS DETAIL
record() {
  ROWS+=("$(printf '%-12s %-8s %7s  %s' "$1" "$2" "$3" "$4")")
  [ "$2" = failed ] && FAILED=$((FAILED + 1))
  return 0
}

# stage NAME COMMAND...: runs COMMAND, stdout in $OUT/NAME.out, stderr in $OUT/NAME.log; sets
# STATUS and TOOK
stage() {
  local name="$1"; shift
  local began=$SECONDS
  if "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"; then STATUS=ok; else STATUS=failed; fi
  TOOK=$((SECONDS - began))
}

# run_summary NAME: the JSON summary a `run` stage printed, flattened to one line
run_summary() {
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(', '.join(f'{k} {v}' for k,v in r.items() if k!='results'))" \
    "$OUT/$1.out" 2>/dev/null || echo "no summary"
}

# 1. environment
ENVIRONMENT=$("$PY" - <<'PYTHON' 2>/dev/null
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"{name}; torch {torch.__version__}; CUDA {torch.version.cuda or 'none'}")
PYTHON
) || ENVIRONMENT="python/torch not importable with $PY"
if [[ "$ENVIRONMENT" == "python/torch"* ]]; then
  record environment failed 0 "$ENVIRONMENT"
elif [ "$MODE" = full ] && [[ "$ENVIRONMENT" == "no CUDA device"* ]]; then
  record environment failed 0 "$ENVIRONMENT (a full check needs a GPU; use --dry-run)"
else
  record environment ok 0 "$ENVIRONMENT"
fi

# 2. the CUDA-only tests (they skip themselves without CUDA)
stage cuda-tests "$PY" -m pytest -p no:cacheprovider -m cuda -rs tests/test_cuda.py
COUNTS=$(grep -Eo '[0-9]+ (passed|failed|skipped|error)' "$OUT/cuda-tests.out" | paste -sd, -)
record cuda-tests "$STATUS" "$TOOK" "${COUNTS:-no tests ran} (output: $OUT/cuda-tests.out)"

# 3. a short real conversion, MiniLM -> Linformer, bf16
CONVERSION=(specs/quickstart.toml
  --set "experiment.output_dir=$OUT/conversion" --set "experiment.teacher_cache=$OUT/teacher-cache"
  --set training.max_steps=200 --set training.precision=bf16)
if [ "$MODE" = full ]; then
  stage conversion "$PY" -m cald_framework run "${CONVERSION[@]}"
  record conversion "$STATUS" "$TOOK" "200 steps bf16: $(run_summary conversion)"
else
  stage conversion "$PY" -m cald_framework validate "${CONVERSION[@]}"
  record conversion "$STATUS" "$TOOK" "spec and overrides validated (not run: dry run)"
fi

# 4. the same conversion under DeepSpeed ZeRO-2 on the one GPU (one process), 50 steps in bf16
ZERO2=(specs/quickstart.toml
  --set "experiment.output_dir=$OUT/zero-2" --set "experiment.teacher_cache=$OUT/teacher-cache"
  --set training.max_steps=50 --set training.precision=bf16
  --set training.distributed.strategy=deepspeed --set training.distributed.zero_stage=2)
if [ "$MODE" = full ]; then
  stage zero-2 "$PY" -m cald_framework run "${ZERO2[@]}"
  record zero-2 "$STATUS" "$TOOK" "50 steps bf16 under ZeRO-2: $(run_summary zero-2)"
else
  stage zero-2 "$PY" -m cald_framework validate "${ZERO2[@]}"
  record zero-2 "$STATUS" "$TOOK" "spec and overrides validated (not run: dry run)"
fi

# 5. the scaling bench up to 32k tokens
SCALING=(benchmarks/bench_scaling.py --scenarios minilm --repeats 1 --overhead-steps 0
  --text-lengths 512,2048,8192,32768 --out "$OUT/scaling")
if [ "$MODE" = full ]; then
  stage scaling "$PY" "${SCALING[@]}"
  record scaling "$STATUS" "$TOOK" "tables in $OUT/scaling"
else
  stage scaling "$PY" "${SCALING[@]}" --help
  record scaling "$STATUS" "$TOOK" "options parsed (not run: dry run)"
fi

# 6. a frozen teacher (pythia-160m's shape) offloaded: training.distributed.teacher = "offload"
OFFLOAD=(benchmarks/bench_teacher_layout.py --layout offload --hidden 768 --layers 12 --out "$OUT/offload")
if [ "$MODE" = full ]; then
  stage offload "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "${OFFLOAD[@]}"
  DETAIL=$("$PY" -c "import json,sys; t=json.load(open(sys.argv[1]))['teachers'][-1]; print(f\"whole {t['whole_bytes']/2**20:.0f} MB, GPU peak {t['peak_device_bytes']/2**20:.0f} MB, max |offloaded - whole| {t['largest_difference']:.1e}\")" \
    "$OUT/offload/rank-00000.json" 2>/dev/null || echo "no report")
  record offload "$STATUS" "$TOOK" "$DETAIL"
else
  stage offload "$PY" "${OFFLOAD[@]}" --help
  record offload "$STATUS" "$TOOK" "options parsed (not run: dry run)"
fi

{
  echo "GPU CHECK ($MODE) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '%-12s %-8s %7s  %s\n' stage status seconds detail
  printf '%s\n' "${ROWS[@]}"
  if [ "$FAILED" -eq 0 ]; then RESULT=ok; else RESULT=failed; fi
  echo "RESULT $RESULT: ${#ROWS[@]} stages, $FAILED failed, $((SECONDS - START)) s"
} | tee "$SUMMARY"
[ "$FAILED" -eq 0 ]
