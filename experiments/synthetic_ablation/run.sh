#!/usr/bin/env bash
# Regenerates experiments/synthetic_ablation: the paper's component ablation on the embedded benchmark.
#
#   bash experiments/synthetic_ablation/run.sh       # SEEDS=0,1 CLIPS=32: ~4 h on a 2-core CPU (17 min a job)
#   STAGES=train bash experiments/synthetic_ablation/run.sh          # only stage 1 (e.g. in the background)
#   STEPS=2000 SEEDS=0,1,2 CLIPS=null TRAIN_ARGS="trainer=gpu data.num_workers=6" bash experiments/...  # a GPU
#
# The budget is the demo's, conf/budget/cpu150.yaml (150 steps at batch 4, warmup 20, no validation loop), given
# as its key=value overrides with STEPS / BATCH / WARMUP, when set, in place of its values. Job folders are named by
# the variant and seed plus a hash of the other science overrides on the command line (which is why the budget is
# spelled out: +budget=cpu150 would rename the jobs), so changing BATCH / WARMUP or the budget starts new jobs,
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
#            difference from full DanceLCM ("compare='variant=full'"), with plots, written into this folder.
# 4. samples every variant of the first seed at 4 steps next to the teacher on 4 clips: samples/samples.{png,mp4}.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STAGES=${STAGES:-train evaluate keep report samples}
BUDGET=conf/budget/cpu150.yaml
STEPS=${STEPS:-}    # trainer.max_steps (empty: the budget's)
BATCH=${BATCH:-}    # data.batch_size (empty: the budget's)
WARMUP=${WARMUP:-}  # method.warmup_steps (empty: the budget's)
SEEDS=${SEEDS:-0,1}
VARIANTS=${VARIANTS:-}  # e.g. full,minus_motion: only these variants of +ablation=removal (default: all of them)
CLIPS=${CLIPS:-32}
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
SWEEP=${SWEEP:-runs/synthetic_ablation}
OUT=experiments/synthetic_ablation
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}

budget=$($PY -c 'import sys; from omegaconf import OmegaConf
def flat(node, prefix=""):
    for key, value in node.items():
        yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"]
print(*flat(OmegaConf.to_container(OmegaConf.load(sys.argv[1]))))' "$BUDGET")
budget_args=()
for kv in $budget; do  # one key=value per word
  case ${kv%%=*} in
    trainer.max_steps) kv=trainer.max_steps=${STEPS:=${kv#*=}} ;;
    data.batch_size) kv=data.batch_size=${BATCH:=${kv#*=}} ;;
    method.warmup_steps) kv=method.warmup_steps=${WARMUP:=${kv#*=}} ;;
  esac
  budget_args+=("$kv")
done

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
    "${budget_args[@]}" "method.teacher=$TEACHER" "hydra.sweep.dir=$SWEEP" ckpt_path=auto \
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
$PY -m dancelcm.report "runs=$OUT/jobs" "out=$OUT" "compare='variant=full'"  # quoted: the label holds '='
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
