#!/usr/bin/env bash
# Rebuilds the shipped synthetic-data demo model (models/demo/painmon_demo.onnx).
#   bash packaging/make_demo_model.sh [WORKDIR]
# Needs the training extra (`pip install -e ".[train]"`) and the MediaPipe Face Landmarker
# bundle (`painmon models download`, or PAINMON_FACE_MODEL=/path/face_landmarker.task): the
# live engine frames crops with its landmarks, so the demo model must be trained on them.
# Time: about 75 min on a 2-core CPU (the shipped model: 65 min of training), about a
# minute on one H100. Same seeds give the same data, split and crops; training is not
# bit-reproducible across machines, so a rebuilt model differs slightly from the shipped
# one (compare its test numbers with models/demo/painmon_demo.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-demo-model-work}
mkdir -p "$work"
cd "$work"
painmon synth --out synth80 --subjects 80 --images-per-subject 100 --seed 0
painmon crops --manifest synth80/manifest.csv --out crops80.npz --framing stable-landmarks \
    | tee crops.log
if ! grep -q "mediapipe-landmarker detector" crops.log; then
    echo "the crops were not made with the Face Landmarker: run \`painmon models download\`" \
        "(or set PAINMON_FACE_MODEL) and start again" >&2
    exit 1
fi
painmon split --manifest crops80.npz --out splits80.json --seed 42
painmon train --manifest crops80.npz --splits splits80.json --model dacnn --lr 2e-3 \
    --epochs 24 --device auto --out run
painmon evaluate --run run --manifest crops80.npz --split test --json test_metrics.json \
    --predictions test_predictions.csv --report report.html
# The domain gate is fitted on the run's training subjects' crops and thresholded on its
# validation subjects (the run records both; the crops file is given explicitly).
painmon export --run run --out "$repo/models/demo/painmon_demo.onnx" --demo \
    --manifest crops80.npz --force
# The card's gate figures: held-out synthetic subjects, synthetic videos, the shared real faces.
for seed in 1 2 3 4; do
    painmon synth --video "video$seed.mp4" --seconds 60 --fps 30 --seed "$seed"
done
media="$repo/../shared/media"
painmon bench gate --model "$repo/models/demo/painmon_demo.onnx" --crops crops80.npz \
    --splits splits80.json --in-domain video1.mp4 video2.mp4 video3.mp4 video4.mp4 \
    --real "$media"/*.mp4 "$media"/*.mov "$media"/*.jpg --json gate_report.json
