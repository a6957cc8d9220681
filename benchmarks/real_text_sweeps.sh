#!/bin/bash
# Issue 18's real-text ceiling sweeps: wiki-char and prose-bpe side by side on ONE GPU (both jobs share the card,
# so their seconds are inflated by each other; the report also gives costs in network forwards). At commit d23e3c7
# (MDLM 4000 / AR 2500 / NCE 800 steps for wiki-char) both took 1630 s of device time on one H200; the step counts
# below are cut so that the sweeps and their scoring on the same GPU fit one 30-minute session
# (docs/real_text_sweep.md). Copy the JSON and side files into results/ceiling/ and commit the JSON before
# scoring. Needs the corpora
# prepared (`edlm data prepare wiki-char prose-bpe`, or unpacked as in docs/real_text_sweep.md).
# Then score on the same GPU (`ceiling_sweep.py score --device cuda`) or on a CPU machine: docs/real_text_sweep.md.
#   RUNS=/tmp/r18 MAXWALL=1120 bash benchmarks/real_text_sweeps.sh
set -eu
RUNS=${RUNS:-/tmp/r18}
HERE=$(cd "$(dirname "$0")" && pwd)
COMMON=(--max-wall-seconds "${MAXWALL:-1120}" --conf-steps 8,16,32,64,128 --conf-edlm-steps 8,16,32
        --conf-edlm-k 8 --conf-edlm-window 1.0)
mkdir -p "$RUNS"
python "$HERE/ceiling_sweep.py" sweep --size gpu-char --language wiki-char --runs "$RUNS/char" \
    --out "$RUNS/wiki-char_h200.json" --mdlm-train 3000 --ar-train 2000 --nce-train 600 "${COMMON[@]}" \
    --edlm-steps 16,32,64 --edlm-k 2,4,8,16 --edlm-window 0.2,0.5,1.0 \
    --extra edlm-nce:16:8:1,edlm-nce:32:8:1,edlm-nce:64:8:1,edlm-nce:16:2:0.2,edlm-nce:64:2:0.2,edlm-ar:128:8:1,edlm-ar:128:2:0.2,edlm-ar:256:2:0.2,edlm-ar:512:2:0.2 \
    > "$RUNS/wiki-char.log" 2>&1 &
python "$HERE/ceiling_sweep.py" sweep --size gpu-bpe --language prose-bpe --runs "$RUNS/bpe" \
    --out "$RUNS/prose-bpe_h200.json" --mdlm-train 2500 --ar-train 1500 --nce-train 400 "${COMMON[@]}" \
    --edlm-steps 16,32,64 --edlm-k 2,8 --edlm-window 0.2,1.0 \
    --extra edlm-nce:16:8:1,edlm-nce:32:8:1,edlm-nce:16:2:0.2,edlm-ar:16:16:1,edlm-ar:32:4:1,edlm-ar:128:2:0.2,edlm-ar:128:8:1 \
    > "$RUNS/prose-bpe.log" 2>&1 &
wait
echo "done: $RUNS/wiki-char_h200.json $RUNS/prose-bpe_h200.json (logs beside them)"
