#!/usr/bin/env bash
# Regenerates experiments/teacher_steps: the embedded-default teacher against the ground truth on the held-out
# identities (all 80 test videos, one clip each), DDIM at 50/25/10/4/2/1 steps (trailing spacing) with CFG 2,
# next to copying the reference frame; plus its one-step denoising probe.
#
#   bash experiments/teacher_steps/run.sh                        # the shipped teacher
#   TEACHER=runs/synthetic_teacher_refine/export bash experiments/teacher_steps/run.sh
#
# Writes table.md / metrics.json / per_clip.csv / quality_vs_nfe.png / samples.{png,mp4} (evaluate) and
# probe.md / probe.json (probe) into this folder. About 20 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}
CLIPS=${CLIPS:-null}
OUT=experiments/teacher_steps

echo "==> [1/2] evaluate $TEACHER: DDIM 50/25/10/4/2/1 + CFG 2 and the copy-reference baseline"
$PY -m dancelcm.evaluate "teacher=$TEACHER" "teacher_steps=[50,25,10,4,2,1]" "guidance=[2.0]" \
  "max_clips=$CLIPS" sample_clips=4 "out_dir=$OUT"
echo "==> [2/2] probe: one-step x0 estimate vs t"
$PY -m dancelcm.probe "model_dir=$TEACHER" max_clips=16 "out_dir=$OUT"
echo "written: $OUT/table.md $OUT/probe.md $OUT/samples.png"
