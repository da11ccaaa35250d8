#!/usr/bin/env bash
# LoRA students against the full student on the embedded benchmark (#25): the demo's budget and evaluation.
#
#   bash experiments/lora_student/run.sh          # ~1 h on a 2-core CPU (3 distillations of ~15 min + evaluation)
#
# 1. train    DanceLCM K=4 (+experiment=synthetic_k4 +budget=cpu150: 150 steps at batch 4, the demo's budget) three
#             times from the shipped teacher: the full student (method.lr 5e-5, the default) and LoRA students of
#             rank 16 and 64 (alpha = rank, method.lr=5e-4: adapters start at zero and get 10x the full student's
#             lr, as LoRA fine-tuning usually does). Each under /usr/bin/time -v: the process's peak RSS.
#             Resumable: an interrupted run continues from its last.ckpt (ckpt_path=auto).
# 2. count    parameters trained and parameters held in memory (teacher + student + target, shared ones once).
# 3. evaluate the demo's evaluation: 16 held-out clips, teacher DDIM-50 + CFG 2 against every student at 1/2/4 steps
#             from the same noise per clip (PSNR vs teacher, figure PSNR, sharpness, Frechet distance).
# 4. table    table.md: the evaluation table plus the three resource columns, side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/lora_student
RUNS=${RUNS:-runs/lora_student}
CLIPS=${CLIPS:-16}
STAGES=${STAGES:-train count evaluate table}
TRAIN_ARGS=${TRAIN_ARGS:-}
declare -A ARGS=(
  [full]=""
  [lora_r16]="method.student=lora method.lora.rank=16 method.lora.alpha=16 method.lr=5e-4"
  [lora_r64]="method.student=lora method.lora.rank=64 method.lora.alpha=64 method.lr=5e-4"
)
NAMES="full lora_r16 lora_r64"
mkdir -p "$RUNS"

if [[ " $STAGES " == *" train "* ]]; then
for name in $NAMES; do
  echo "==> [1/4] train $name -> $RUNS/$name"
  # shellcheck disable=SC2086  # the overrides are a list
  /usr/bin/time -v -o "$RUNS/$name.time" $PY -m dancelcm.train +experiment=synthetic_k4 +budget=cpu150 \
    "hydra.run.dir=$RUNS/$name" ckpt_path=auto trainer.enable_progress_bar=false ${ARGS[$name]} $TRAIN_ARGS \
    > "$RUNS/$name.log" 2>&1 || { tail -20 "$RUNS/$name.log"; exit 1; }
  grep "Maximum resident set size" "$RUNS/$name.time"
done
fi

if [[ " $STAGES " == *" count "* ]]; then
echo "==> [2/4] count parameters"
for name in $NAMES; do
  # shellcheck disable=SC2086
  $PY $OUT/count.py "$RUNS/$name.params.json" ${ARGS[$name]}
done
fi

if [[ " $STAGES " == *" evaluate "* ]]; then
echo "==> [3/4] evaluate on $CLIPS held-out clips"
students=$(for n in $NAMES; do printf '%s:%s/%s/export,' "$n" "$RUNS" "$n"; done)
$PY -m dancelcm.evaluate "students={${students%,}}" "teacher_steps=[50]" "guidance=[2.0]" vs_teacher.steps=50 \
  vs_teacher.guidance=2.0 "student_steps=[1,2,4]" "max_clips=$CLIPS" sample_clips=2 seed=0 \
  reference_baseline=false "out_dir=$RUNS/eval"
fi

if [[ " $STAGES " == *" table "* ]]; then
echo "==> [4/4] table -> $OUT/table.md"
$PY $OUT/table.py "$RUNS" "$OUT" $NAMES
fi
