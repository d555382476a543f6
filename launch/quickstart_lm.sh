#!/usr/bin/env bash
# The language-model quickstart, from a fresh clone: installs the
# dependencies, builds `distill`, prepares the King James Bible (Debian's
# bible-kjv) with a SentencePiece BPE tokenizer, trains a 5.3M-parameter gpt
# teacher for 3 epochs, then a 1.5M-parameter student twice at the same
# token budget (one epoch): on the next tokens alone and distilled from the
# teacher. Prints the perplexity table and a continuation by each model.
# About 15 minutes on a 2-core machine after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/install_deps.sh
bash launch/build.sh distill distill_prepare_text distill_generate

BIN=build/bin
start=$(date +%s)
if [ ! -f runs/lm/data/corpus.json ]; then
  echo "== 0/3: preparing the corpus into runs/lm/data"
  "$BIN/distill_prepare_text" --out_dir runs/lm/data
fi
echo "== 1/3: training the teacher (launch/configs/lm_teacher.pbtxt)"
"$BIN/distill" --config launch/configs/lm_teacher.pbtxt
echo "== 2/3: the student on hard labels (launch/configs/lm_student_hard.pbtxt)"
"$BIN/distill" --config launch/configs/lm_student_hard.pbtxt
echo "== 3/3: the student distilled (launch/configs/lm_student_distill.pbtxt)"
"$BIN/distill" --config launch/configs/lm_student_distill.pbtxt
end=$(date +%s)

/usr/bin/python3 - "$start" "$end" <<'PY'
import json, sys
start, end = map(int, sys.argv[1:])
rows = [("teacher", "runs/lm/teacher"),
        ("student, hard labels", "runs/lm/student_hard"),
        ("student, distilled", "runs/lm/student_distill")]
print()
print(f"{'model':22} {'params':>10} {'test ppl':>9} {'valid ppl':>10} "
      f"{'next-token acc':>15} {'tokens/s':>9}")
for name, run in rows:
    s = json.load(open(run + "/summary.json"))
    print(f"{name:22} {s['params']:>10,} {s['test_perplexity']:9.2f} "
          f"{s['validation_perplexity']:10.2f} "
          f"{100 * s['test_accuracy']:14.2f}% {s['tokens_per_sec']:9.0f}")
print(f"\ntotal wall time {end - start}s; run folders: runs/lm/*")
PY
for config in lm_teacher lm_student_distill; do
  echo
  echo "== $config continues \"And God said\":"
  "$BIN/distill_generate" --config "launch/configs/$config.pbtxt" \
    --prompt "And God said" --max_new_tokens 40 --temperature 0.8 \
    --top_p 0.95 --seed 1
done
