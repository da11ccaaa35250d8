#!/usr/bin/env bash
# Regenerates experiments/teacher_steps: the embedded-default teacher against the ground truth on the held-out
# identities (the first CLIPS test videos, one clip each; 32 by default), DDIM at 50/25/10/4/2/1 steps (trailing
# spacing) with CFG 2, next to copying the reference frame; plus its one-step denoising probe.
#
#   bash experiments/teacher_steps/run.sh                        # the shipped teacher, 32 clips
#   CLIPS=null bash experiments/teacher_steps/run.sh             # all 80 held-out videos (~2.5x longer)
#   TEACHER=runs/synthetic_teacher_refine/export bash experiments/teacher_steps/run.sh
#
# Writes table.md / metrics.json / per_clip.csv / quality_vs_nfe.png / samples.{png,mp4} (evaluate) and
# probe.md / probe.json (probe) into this folder. 25 minutes on the 2-core CPU (32 clips; DDIM-50 + CFG is
# 25 s of it per clip).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
TEACHER=${TEACHER:-checkpoints/synthetic_teacher}
CLIPS=${CLIPS:-32}
OUT=experiments/teacher_steps

echo "==> [1/2] evaluate $TEACHER: DDIM 50/25/10/4/2/1 + CFG 2 and the copy-reference baseline"
$PY -m dancelcm.evaluate "teacher=$TEACHER" "teacher_steps=[50,25,10,4,2,1]" "guidance=[2.0]" \
  "max_clips=$CLIPS" sample_clips=4 "out_dir=$OUT"
echo "==> [2/2] probe: one-step x0 estimate vs t"
$PY -m dancelcm.tools.probe "model_dir=$TEACHER" max_clips=16 "out_dir=$OUT"
echo "written: $OUT/table.md $OUT/probe.md $OUT/samples.png"
