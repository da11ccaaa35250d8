#!/usr/bin/env bash
# Follow-up to the ablation: does the face path do anything once it can train? In the study (150 steps at
# lr 5e-5) removing face injection changed face-region PSNR by ~0.001 dB, and the face path's zero-initialised
# value projections had reached ~1% of the norm of the network's own. This trains full DanceLCM once more with
# the same budget and seed 0, but the face path's new parameters at SCALE x lr (method.face_lr_scale), and
# evaluates it next to the study's full DanceLCM (seed 0) on the same 32 clips from the same noise.
#
#   bash experiments/synthetic_ablation/face_lr.sh      # after run.sh; ~17 min on a 2-core CPU
#
# Writes experiments/synthetic_ablation/face_lr/: evaluate's outputs (table.md, metrics.json, per_clip.csv,
# samples.png) and paired.md: the new run minus full DanceLCM per clip (mean ± standard error over clips;
# one seed, so no seed spread). SCALE is fixed before seeing any result; nothing here is tuned on the test split.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SCALE=${SCALE:-10}
SWEEP=${SWEEP:-runs/synthetic_ablation}
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}
RUN=runs/synthetic_ablation_face_lr/face_lr${SCALE}_seed0
OUT=experiments/synthetic_ablation/face_lr
full=$(ls -d "$SWEEP"/variant=full,seed=0__*/export 2>/dev/null | head -1)
[[ -n "$full" ]] || { echo "no full DanceLCM seed 0 export under $SWEEP: run experiments/synthetic_ablation/run.sh first" >&2; exit 1; }

echo "==> train full DanceLCM, seed 0, face path at ${SCALE} x lr -> $RUN (resumes; a finished run returns at once)"
$PY -m dancelcm.train +experiment=synthetic_k4 +variant=full +budget=cpu150 seed=0 "method.teacher=$TEACHER" \
  "method.face_lr_scale=$SCALE" "hydra.run.dir=$RUN" ckpt_path=auto trainer.enable_progress_bar=false

echo "==> evaluate it next to $full"
[[ -z "${FORCE:-}" && "$OUT/per_clip.csv" -nt "$RUN/export/bundle.json" ]] && echo "skip: evaluated after its export" ||
$PY -m dancelcm.evaluate "teacher=$TEACHER" "students={full:'$full',face_lr$SCALE:'$RUN/export'}" teacher_steps=[] \
  reference_baseline=false student_steps=[1,2,4] max_clips=32 sample_clips=4 \
  "reference_cache='$SWEEP/teacher_reference.pt'" "out_dir=$OUT"

echo "==> paired differences -> $OUT/paired.md"
$PY -c 'import sys; from pathlib import Path; from dancelcm.evaluation.runs import read_per_clip
from dancelcm.evaluation.tables import paired_students
out = Path(sys.argv[1]); table = paired_students(read_per_clip(out / "per_clip.csv"), sys.argv[2], "full", label="full DanceLCM (seed 0)")
(out / "paired.md").write_text(table + "\n"); print(table)' "$OUT" "face_lr$SCALE"
