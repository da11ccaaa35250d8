#!/usr/bin/env bash
# Regenerates experiments/synthetic_ablation: the paper's component ablation on the embedded benchmark.
#
#   bash experiments/synthetic_ablation/run.sh            # STEPS=400 SEEDS=0,1 CLIPS=null (all 80 held-out videos) by default
#   STEPS=2000 SEEDS=0,1,2 bash experiments/synthetic_ablation/run.sh
#
# 1. train   one Hydra multirun: +ablation=removal (VideoLCM baseline, full DanceLCM, and full DanceLCM with
#            each component removed in turn) x SEEDS, every job from the shipped teacher with the same budget.
#            Interrupted? Run the script again: every job resumes from its last.ckpt (ckpt_path=auto).
# 2. evaluate every job's exported student at 1/2/4 steps on the held-out identities (test split), all
#            from the same initial noise per clip; the teacher's DDIM-50 + CFG reference runs once
#            (reference_cache) and every student row gets PSNR against it.
# 3. report  one table over jobs, and one over seeds (mean ± spread between seeds), with plots, written
#            into this folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-0,1}
CLIPS=${CLIPS:-null}
SWEEP=${SWEEP:-runs/synthetic_ablation}
OUT=experiments/synthetic_ablation
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}

echo "==> [1/3] train: +ablation=removal x seeds {$SEEDS}, $STEPS steps each -> $SWEEP"
$PY -m dancelcm.train -m +experiment=synthetic_k4 +ablation=removal "seed=$SEEDS" \
  "trainer.max_steps=$STEPS" "method.teacher=$TEACHER" "hydra.sweep.dir=$SWEEP" ckpt_path=auto \
  data.num_workers=1 trainer.enable_progress_bar=false

echo "==> [2/3] evaluate every job on $CLIPS held-out clips"
for run in "$SWEEP"/*/; do
  run=${run%/}
  [[ -f "$run/export/bundle.json" ]] || { echo "skip $run: no export"; continue; }
  $PY -m dancelcm.evaluate "teacher=$TEACHER" "students={student:$run/export}" teacher_steps=[] \
    reference_baseline=false student_steps=[1,2,4] "max_clips=$CLIPS" sample_clips=0 \
    "reference_cache=$SWEEP/teacher_reference.pt" "out_dir=$run/eval"
done

echo "==> [3/3] report -> $OUT"
$PY -m dancelcm.report "runs=$SWEEP" "out=$OUT"
