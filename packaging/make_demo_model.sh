#!/usr/bin/env bash
# Rebuilds the shipped synthetic-data demo model (models/demo/painmon_demo.onnx).
#   bash packaging/make_demo_model.sh [WORKDIR]
# Face detection needs the MediaPipe Face Landmarker bundle (`painmon models download`);
# training wants a CUDA GPU (about a minute on one H100); on a CPU it takes hours.
# Same seeds give the same data, split and crops; GPU training is not bit-reproducible,
# so a rebuilt model differs slightly from the shipped one (compare its card's numbers).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-demo-model-work}
mkdir -p "$work"
cd "$work"
painmon synth --out synth40 --subjects 40 --images-per-subject 100 --seed 0
painmon split --manifest synth40/manifest.csv --out splits40.json --seed 42
painmon crops --manifest synth40/manifest.csv --out crops40.npz
painmon train --manifest crops40.npz --splits splits40.json --model dacnn --lr 2e-3 \
    --device auto --compile reduce-overhead --out run
painmon evaluate --run run --manifest crops40.npz --split test --json test_metrics.json \
    --report report.html
painmon export --run run --out "$repo/models/demo/painmon_demo.onnx" --demo
