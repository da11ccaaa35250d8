#!/usr/bin/env bash
# Regenerates experiments/synthetic_ablation: the paper's component ablation on the embedded benchmark.
#
#   bash experiments/synthetic_ablation/run.sh       # STEPS=150 SEEDS=0,1 CLIPS=32: ~4 h on a 2-core CPU (17 min a job)
#   STAGES=train bash experiments/synthetic_ablation/run.sh          # only stage 1 (e.g. in the background)
#   STEPS=2000 SEEDS=0,1,2 CLIPS=null TRAIN_ARGS="trainer=gpu data.num_workers=6" bash experiments/...  # a GPU
#
# The budget below (batch 4, warmup 20, no validation loop) is the demo's CPU budget. Job folders are named by
# the variant and seed plus a hash of the other science overrides, so changing BATCH / WARMUP starts new jobs,
# while a larger STEPS resumes the same jobs from their last.ckpt and trains them further.
#
# 1. train   one Hydra multirun: +ablation=removal (VideoLCM baseline, full DanceLCM, and full DanceLCM with
#            each component removed in turn) x SEEDS, every job from the shipped teacher with the same budget.
#            Interrupted? Run the script again: every job resumes from its last.ckpt (ckpt_path=auto).
# 2. evaluate every job's exported student at 1/2/4 steps on the held-out identities (test split), all
#            from the same initial noise per clip; the teacher's DDIM-50 + CFG reference runs once
#            (reference_cache) and every student row gets PSNR against it. A job whose eval/metrics.json is
#            newer than its export is skipped (FORCE=1 re-evaluates).
# 3. report  one table over jobs, one over seeds (mean ± spread between seeds) and every variant's paired
#            difference from full DanceLCM (compare=variant=full), with plots, written into this folder.
# 4. samples every variant of the first seed at 4 steps next to the teacher on 4 clips: samples/samples.{png,mp4}.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STAGES=${STAGES:-train evaluate keep report samples}
STEPS=${STEPS:-150}
BATCH=${BATCH:-4}
WARMUP=${WARMUP:-20}
SEEDS=${SEEDS:-0,1}
VARIANTS=${VARIANTS:-}  # e.g. full,minus_motion: only these variants of +ablation=removal (default: all of them)
CLIPS=${CLIPS:-32}
TRAIN_ARGS=${TRAIN_ARGS:-data.num_workers=0}
EVAL_ARGS=${EVAL_ARGS:-}
SWEEP=${SWEEP:-runs/synthetic_ablation}
OUT=experiments/synthetic_ablation
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}

kept() {  # kept VARIANT SEED: the job's records are in $OUT/jobs, evaluated, at this STEPS
  local d
  for d in "$OUT/jobs/variant=$1,seed=$2__"*/; do
    [[ -f "$d/eval/metrics.json" ]] && grep -qx -- "- trainer.max_steps=$STEPS" "$d/.hydra/overrides.yaml" && return 0
  done
  return 1
}

if [[ " $STAGES " == *" train "* ]]; then
all=${VARIANTS:-$(sed -n 's/^ *+variant: *//p' conf/ablation/removal.yaml)}
for seed in ${SEEDS//,/ }; do
  todo=""
  for v in ${all//,/ }; do kept "$v" "$seed" || todo+="${todo:+,}$v"; done
  if [[ -z "$todo" ]]; then echo "==> [1/4] train seed $seed: every variant is kept in $OUT/jobs"; continue; fi
  echo "==> [1/4] train: +ablation=removal variants {$todo} x seed $seed, $STEPS steps each at batch $BATCH -> $SWEEP"
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of overrides
  $PY -m dancelcm.train -m +experiment=synthetic_k4 +ablation=removal "+variant=$todo" "seed=$seed" \
    "trainer.max_steps=$STEPS" "data.batch_size=$BATCH" "method.warmup_steps=$WARMUP" \
    trainer.limit_val_batches=0 trainer.num_sanity_val_steps=0 trainer.log_every_n_steps=10 \
    callbacks.checkpoint_every_n_steps=50 "method.teacher=$TEACHER" "hydra.sweep.dir=$SWEEP" ckpt_path=auto \
    trainer.enable_progress_bar=false $TRAIN_ARGS
done
fi

if [[ " $STAGES " == *" evaluate "* ]]; then
echo "==> [2/4] evaluate every job on $CLIPS held-out clips"
for run in "$SWEEP"/*/; do
  run=${run%/}
  [[ -f "$run/export/bundle.json" ]] || { echo "skip $run: no export (not trained yet)"; continue; }
  if [[ -z "${FORCE:-}" && "$run/eval/metrics.json" -nt "$run/export/bundle.json" ]]; then
    echo "skip $run: evaluated after its last export (FORCE=1 re-evaluates)"; continue
  fi
  # the job folders' names hold '=' and ',' (variant=full,seed=0__...): quoted for Hydra's override grammar
  # shellcheck disable=SC2086  # EVAL_ARGS is a list of overrides
  $PY -m dancelcm.evaluate "teacher=$TEACHER" "students={student:'$run/export'}" teacher_steps=[] \
    reference_baseline=false student_steps=[1,2,4] "max_clips=$CLIPS" sample_clips=0 \
    "reference_cache='$SWEEP/teacher_reference.pt'" "out_dir='$run/eval'" $EVAL_ARGS
done
fi

if [[ " $STAGES " == *" keep "* ]]; then
# The records of every evaluated job (its composed config, training curves and evaluation; no weights, ~100 KB)
# are copied into $OUT/jobs, which git keeps: the report reads them, so a study spread over several machines or
# sessions (runs/ is scratch) loses no finished job. A job kept there is not trained again (see train above).
echo "==> keep: evaluated jobs' records -> $OUT/jobs"
for run in "$SWEEP"/*/; do
  run=${run%/}
  [[ -f "$run/eval/metrics.json" ]] || continue
  dst="$OUT/jobs/${run##*/}"
  rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
  cp -r "$run/.hydra" "$run/csv" "$dst.tmp/"
  mkdir -p "$dst.tmp/eval" && cp "$run/eval/metrics.json" "$run/eval/per_clip.csv" "$run/eval/table.md" "$dst.tmp/eval/"
  rm -rf "$dst" && mv "$dst.tmp" "$dst"
done
fi

if [[ " $STAGES " == *" report "* ]]; then
echo "==> [3/4] report of the kept jobs -> $OUT"
$PY -m dancelcm.report "runs=$OUT/jobs" "out=$OUT" compare=variant=full
fi

if [[ " $STAGES " == *" samples "* ]]; then
seed=${SEEDS%%,*}
students=""
for run in "$SWEEP"/variant=*,seed="$seed"__*/; do
  run=${run%/}
  variant=${run##*/variant=}
  [[ -f "$run/export/bundle.json" ]] && students+="${students:+,}${variant%%,seed=*}:'$run/export'"
done
echo "==> [4/4] samples: every variant of seed $seed at 4 steps next to the teacher, 4 clips -> $OUT/samples"
[[ -n "$students" ]] || { echo "no exported job of seed $seed under $SWEEP: train first" >&2; exit 1; }
# shellcheck disable=SC2086
$PY -m dancelcm.evaluate "teacher=$TEACHER" "students={$students}" teacher_steps=[] reference_baseline=false \
  student_steps=[4] max_clips=4 sample_clips=4 "reference_cache='$SWEEP/teacher_reference.pt'" \
  "out_dir=$OUT/samples" $EVAL_ARGS
fi
