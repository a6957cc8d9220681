#!/bin/bash
# Speed, round three (docs/performance.md, "Optional kernels"): every A/B row of the optional kernels in ONE call
# of a one-GPU machine with no package registry, within BUDGET seconds (default 500), then a short table.
#   there: bash benchmarks/gpu_round3.sh             # wheels carried in .whl/ (liger-kernel, torchao); $OUT set
#   here:  bash benchmarks/gpu_round3.sh --dry-run   # CPU, tiny sizes, eager, kernels fall back (warnings)
# Sections, most wanted first, each under `timeout` with what is left of the budget (rows are written as they
# finish, so a cut section keeps its finished rows; the log says what was cut):
#   1 train_throughput, small MDLM, one process per row: blocks+cap | +lce (fused linear + CE) | +f8 (float8) |
#     +fsdp (FSDP2 over a group of one) | +norm+rope (Liger; last: it crashed on an H100)
#   2 sampling_speed, MDLM batch 16 x 128 steps: lazy+compiled | +fp8w | +int8w | +gelu (cuBLASLt epilogue)
#   3 round3_quality.py train: markov3, plain vs --kernels float8, same seed and data (curves, final val)
#   4 round3_quality.py sample: the plain run's model with trained / fp8 / int8 weights, exact gen-NLL
#   5 the `gpu`-marked numerics tests of the fused paths (tests/test_kernels.py, test_fast_paths.py)
#   6 `edlm train --parallel fsdp` under torchrun with one process on the GPU, saved -> fsdp1_run.tar.gz
#     (tests/test_distributed.py resumes it on CPU gloo: EDLM_FSDP_GPU_RUN=<unpacked folder>)
#   7 train_throughput: small AR blocks | +lce (the summed fused path), MDLM +flat | +flat+lce
# $OUT gets at most 8 files: bench_train_r3_TAG.json, bench_sampling_r3_TAG.json, float8_markov3_TAG.json,
# quant_sampling_markov3_TAG.json, fsdp1_run_TAG.tar.gz, round3_summary_TAG.json, round3_log.txt (TAG: _h100 or
# _h200 from the card's name).
set -u
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1
T0=$(date +%s)
BUDGET=${BUDGET:-500}
CAPX=${CAPX:-1}  # the sections' caps x this (a dry run on a slow, shared CPU: CAPX=10 BUDGET=3000)
W=${R3_WORK:-/tmp/r3}
OUT=${OUT:-$W/out}
rm -rf "$W" && mkdir -p "$W" "$OUT"
LOG=$OUT/round3_log.txt
export PYTHONUNBUFFERED=1 EDLM_NO_PROGRESS=1 EDLM_DATA=$W/data
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
section() {  # NAME CAP CMD...: run CMD for at most min(CAP, what is left - 15 s for the summary)
  local name=$1 cap=$2 t
  shift 2
  t=$(( $(left) - 15 ))
  cap=$(( cap * CAPX ))
  [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 20 ]; then echo "[$name] skipped: $(left) s of the budget left" | tee -a "$LOG"; return; fi
  echo "[$name] (at most ${t} s) $*" | tee -a "$LOG"
  timeout -k 5 "$t" "$@" >> "$LOG" 2>&1
  echo "[$name] exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
}

if [ $DRY = 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site
  TAG=_$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -o -i 'h[0-9]00' | head -n 1 | tr A-Z a-z)
  [ "$TAG" = _ ] && TAG=_gpu  # the result files name the card: _h100, _h200
  DEV=cuda TINY=() QSIZE=(--size gpu --steps 300 --num 512 --batch 256)
  MD=blocks AR=blocks LZ=lazy+compiled SETM=small-owt-mdlm SETA=small-owt-ar
else
  export PYTHONPATH=$PWD/src
  DEV=cpu TAG=_dry TINY=(--device cpu --tiny --vocab 63 --length 32) QSIZE=(--size tiny --steps 10 --num 32 --batch 16
                                                                           --sample-steps 8)
  MD=eager AR=eager LZ=lazy SETM=tiny-mdlm SETA=tiny-ar
fi
python3 -c "import torch, edlm, importlib.util as u; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  *(torch.cuda.get_device_name(),) if torch.cuda.is_available() else (), 'liger', bool(u.find_spec('liger_kernel')),
  'torchao', bool(u.find_spec('torchao')))" 2>&1 | tee -a "$LOG"
TT=(python3 benchmarks/train_throughput.py --device "$DEV" --no-parity --steps 15)
[ $DRY = 1 ] && TT=(python3 benchmarks/train_throughput.py --device cpu --no-parity --steps 2 --strict)
# the corpora (CPU work) while the GPU sections run: markov3 for the quality runs, synthetic for the FSDP2 save
(python3 -m edlm data prepare markov3 && python3 -m edlm data prepare synthetic) > "$W/data.log" 2>&1 &
DATA=$!

i=0
for v in $MD+cap $MD+cap+lce $MD+cap+f8 $MD+cap+fsdp $MD+cap+norm+rope; do  # one process each: a crash costs one row
  i=$((i + 1)); section "train-mdlm-$v" 45 "${TT[@]}" --setups $SETM --out "$W/train_1_mdlm_$i.json" --variants "$v"
done
section sampling 150 python3 benchmarks/sampling_speed.py "${TINY[@]}" --mdlm "" --edlm "" --out "$W/sampling.json" \
  --paths $LZ,$LZ+fp8w,$LZ+int8w,$LZ+gelu
wait $DATA || { echo "data prepare failed:"; tail -n 5 "$W/data.log"; } | tee -a "$LOG"
section float8-curves 150 python3 benchmarks/round3_quality.py train --runs "$W/runs" --out "$W/float8.json" \
  --device "$DEV" "${QSIZE[@]}"
section quant-sampling 120 python3 benchmarks/round3_quality.py sample --runs "$W/runs" --out "$W/quant.json" \
  --device "$DEV" "${QSIZE[@]}"
section gpu-tests 75 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py tests/test_fast_paths.py
section fsdp-save 45 python3 -m torch.distributed.run --nproc_per_node 1 --master_port 29533 -m edlm train \
  --out "$W/fsdp1_run" --parallel fsdp --device "$DEV" --data synthetic --n-layers 2 --d-model 64 --n-heads 2 \
  --cond-dim 32 --max-len 32 --seq-len 32 --batch-size 16 --max-steps 4 --save-every 4 --log-every 1 \
  --eval-every 0 --eval-batches 2 --quiet
[ -f "$W/fsdp1_run/run.json" ] && tar -C "$W" -czf "$OUT/fsdp1_run$TAG.tar.gz" fsdp1_run
section train-ar 90 "${TT[@]}" --setups $SETA --out "$W/train_2_ar.json" --variants $AR,$AR+lce
section train-flat 60 "${TT[@]}" --setups $SETM --out "$W/train_3_flat.json" --variants $MD+cap+flat,$MD+cap+flat+lce
echo "total $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
python3 benchmarks/round3_summary.py "$W" "$OUT" "$TAG" 2>&1 | tee -a "$LOG"
