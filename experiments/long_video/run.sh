#!/usr/bin/env bash
# Regenerates experiments/long_video: whole held-out videos from 8-frame windows, with and without overlap (#27).
#
#   bash experiments/long_video/run.sh                   # all stages (the teacher's rows take hours on a 2-core CPU)
#   STAGES=students bash experiments/long_video/run.sh    # the students' rows only (minutes)
#   STUDENT=runs/demo/synthetic_k4/export BASELINE=runs/demo/synthetic_lcm/export ...   # the students (make demo's)
#
# Every held-out video of the synthetic test split at its full length: 24 frames at the training stride 2 (48
# source frames), one clip per video, sampled in windows of the training length (8 frames) with 0 (independent
# windows), 2 and 4 frames of overlap fused at every step (triangular weights), all from the same noise per video.
# Each row: the seam ratio (1 = no more change across window borders than the ground truth has), figure PSNR, FD,
# NFE and seconds per output frame.
#
# 1. students  DanceLCM K=4 (and the VideoLCM baseline) at 2 and 4 steps on CLIPS (32) videos
# 2. teacher   DDIM-50 + CFG 2 on TEACHER_CLIPS videos (50 steps x 2 x 3-5 windows a video: ~10 min a video here)
# 3. strip     the frames around the first window border, independent vs overlapping windows -> strip.png
# 4. report    table.md from the evaluations
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STAGES=${STAGES:-students teacher strip report}
STUDENT=${STUDENT:-runs/demo/synthetic_k4/export}
BASELINE=${BASELINE:-runs/demo/synthetic_lcm/export}
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}
CLIPS=${CLIPS:-32}
TEACHER_CLIPS=${TEACHER_CLIPS:-8}
OUT=experiments/long_video
LONG="long_clip={window: 8, overlaps: [0, 2, 4], weights: triangular}"
COMMON=(data.num_frames=24 data.val_clips_per_video=1 data.val_batch_size=4 "$LONG" sample_clips=0
        reference_baseline=false vs_teacher=null)

if [[ " $STAGES " == *" students "* ]]; then
  echo "==> [1/4] students on $CLIPS whole videos -> $OUT/eval_students"
  $PY -m dancelcm.evaluate "teacher=$TEACHER" "students={DanceLCM:'$STUDENT',VideoLCM:'$BASELINE'}" teacher_steps=[] \
    student_steps=[2,4] "max_clips=$CLIPS" "${COMMON[@]}" "out_dir=$OUT/eval_students"
fi
if [[ " $STAGES " == *" teacher "* ]]; then
  echo "==> [2/4] teacher DDIM-50 + CFG 2 on $TEACHER_CLIPS whole videos -> $OUT/eval_teacher"
  $PY -m dancelcm.evaluate "teacher=$TEACHER" teacher_steps=[50] guidance=[2.0] "max_clips=$TEACHER_CLIPS" \
    "${COMMON[@]}" "out_dir=$OUT/eval_teacher"
fi
if [[ " $STAGES " == *" strip "* ]]; then
  echo "==> [3/4] strip -> $OUT/strip.png"
  $PY "$OUT/strip.py" "$STUDENT" "$OUT/strip.png"
fi
if [[ " $STAGES " == *" report "* ]]; then
  echo "==> [4/4] report -> $OUT/table.md"
  $PY "$OUT/table.py" "$OUT"
fi
