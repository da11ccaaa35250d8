#!/usr/bin/env bash
# Regenerates experiments/convergence: does the few-step student reach its teacher with a longer budget, and does
# DanceLCM's lead over the VideoLCM baseline hold as both converge?
#
#   bash experiments/convergence/run.sh                         # every stage; ~4 h of 2-core CPU a job at 1500 steps
#   STAGES=train JOBS=full:uniform bash experiments/convergence/run.sh   # one job's training, e.g. in the background
#   TRAIN_ARGS="trainer=gpu data.num_workers=6" bash experiments/convergence/run.sh   # on a GPU machine
#
# A job is VARIANT:GRID, VARIANT a conf/variant (full = DanceLCM K=4 with aux head, motion loss and face;
# baseline = VideoLCM), GRID a method.segments.grid. Every job trains from the shipped teacher with the study's
# budget (conf/budget/cpu150.yaml: batch 4, 20 warm-up steps, constant lr) to STEPS (1500) steps, keeping an export
# at each of SNAPSHOTS (150,500 and the last step) in runs/convergence/<job>/exports/step_N.
#
# 1. train     one run per job in runs/convergence/<variant>_<grid>; interrupted? run again: ckpt_path=auto resumes
#              from the newest checkpoint (every 50 steps), snapshots already written are kept.
# 2. evaluate  every snapshot at 1/2/4 student steps on the study's 32 held-out clips, all from the same noise per clip,
#              against the teacher's DDIM-50 + CFG 2 reference (computed once, cached by the teacher's contents).
# 3. keep      the evaluated snapshots' records (metrics, per-clip table; no weights) -> experiments/convergence/jobs
# 4. report    table.md, results.json and quality_vs_steps.png from the kept records.
# 5. samples   samples_<STEPS>_<grid>.png: DanceLCM and the baseline at 2 and 4 steps on 2 held-out clips, per grid
#              in SAMPLE_GRIDS (uniform fine_end).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STAGES=${STAGES:-train evaluate keep report samples}
JOBS=${JOBS:-full:uniform baseline:uniform full:fine_end baseline:fine_end}
STEPS=${STEPS:-1500}
SNAPSHOTS=${SNAPSHOTS:-150,500,$STEPS}
SEED=${SEED:-0}
CLIPS=${CLIPS:-32}
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
SWEEP=${SWEEP:-runs/convergence}
SAMPLE_GRIDS=${SAMPLE_GRIDS:-uniform fine_end}
OUT=experiments/convergence
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}

if [[ " $STAGES " == *" train "* ]]; then
for job in $JOBS; do
  variant=${job%%:*} grid=${job#*:}
  echo "==> [1/5] train $variant on the $grid grid: $STEPS steps, snapshots at $SNAPSHOTS -> $SWEEP/${variant}_$grid"
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of overrides
  $PY -m dancelcm.train +experiment=synthetic_k4 "+variant=$variant" "method.segments.grid=$grid" "seed=$SEED" \
    trainer.max_steps="$STEPS" trainer.limit_val_batches=0 trainer.num_sanity_val_steps=0 \
    trainer.log_every_n_steps=10 data.batch_size=4 data.num_workers=0 method.warmup_steps=20 \
    callbacks.checkpoint_every_n_steps=50 "callbacks.export_at_steps=[$SNAPSHOTS]" \
    "method.teacher=$TEACHER" "name=${SWEEP#runs/}/${variant}_$grid" "paths.output_dir=runs" ckpt_path=auto \
    trainer.enable_progress_bar=false $TRAIN_ARGS
done
fi

if [[ " $STAGES " == *" evaluate "* ]]; then
echo "==> [2/5] evaluate every snapshot on $CLIPS held-out clips"
for snap in "$SWEEP"/*/exports/step_*/; do
  snap=${snap%/}
  [[ -f "$snap/bundle.json" ]] || continue
  run=${snap%/exports/*} step=${snap##*/step_}
  out="$run/eval/step_$step"
  if [[ -z "${FORCE:-}" && "$out/metrics.json" -nt "$snap/bundle.json" ]]; then
    echo "skip $snap: evaluated (FORCE=1 re-evaluates)"; continue
  fi
  # shellcheck disable=SC2086  # EVAL_ARGS is a list of overrides
  $PY -m dancelcm.evaluate "teacher=$TEACHER" "students={student:'$snap'}" teacher_steps=[] \
    reference_baseline=false student_steps=[1,2,4] "max_clips=$CLIPS" sample_clips=0 \
    "reference_cache='$SWEEP/teacher_reference.pt'" "out_dir='$out'" $EVAL_ARGS
done
fi

if [[ " $STAGES " == *" keep "* ]]; then
echo "==> [3/5] keep: evaluated snapshots' records -> $OUT/jobs"
for ev in "$SWEEP"/*/eval/step_*/; do
  ev=${ev%/}
  [[ -f "$ev/metrics.json" ]] || continue
  run=${ev%/eval/*}
  dst="$OUT/jobs/${run##*/}/${ev##*/}"
  rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
  cp "$ev/metrics.json" "$ev/per_clip.csv" "$ev/table.md" "$dst.tmp/"
  rm -rf "$dst" && mv "$dst.tmp" "$dst"
  rm -rf "$OUT/jobs/${run##*/}/.hydra" "$OUT/jobs/${run##*/}/csv"
  cp -r "$run/.hydra" "$run/csv" "$OUT/jobs/${run##*/}/" 2>/dev/null || true
done
fi

if [[ " $STAGES " == *" report "* ]]; then
echo "==> [4/5] report -> $OUT"
$PY "$OUT/report.py" "$OUT/jobs" "$OUT"
fi

if [[ " $STAGES " == *" samples "* ]]; then
snap=$(printf "step_%07d" "$STEPS")
for grid in $SAMPLE_GRIDS; do
  echo "==> [5/5] samples of the $grid-grid jobs at $STEPS steps -> $OUT/samples_${STEPS}_$grid.png"
  $PY -m dancelcm.evaluate "teacher=$TEACHER" \
    "students={DanceLCM:'$SWEEP/full_$grid/exports/$snap',VideoLCM:'$SWEEP/baseline_$grid/exports/$snap'}" \
    teacher_steps=[] reference_baseline=false vs_teacher=null student_steps=[2,4] max_clips=2 sample_clips=2 \
    "out_dir='$SWEEP/samples_${STEPS}_$grid'"
  cp "$SWEEP/samples_${STEPS}_$grid/samples.png" "$OUT/samples_${STEPS}_$grid.png"
done
fi
