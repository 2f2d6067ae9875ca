#!/usr/bin/env bash
# GPU training-speed and CUDA inference check, run on the lent device machine (not in CI):
#   the device tool runs it from the repo root with $OUT set.
set -u
mkdir -p /tmp/pm && ln -sfn "$PWD" /tmp/pm/painmon && export PYTHONPATH=/tmp/pm
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a "$OUT/gpu.txt"
b() { name=$1; shift; timeout "${LIMIT:-150}" python3 -m painmon bench train --device cuda --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? $(grep -E 'epoch_s_median_with_validation|projected_5x100_s|ms_per_step' "$OUT/$name.json" 2>/dev/null | tr -d '\n ')"; }
b eager --epochs 3
b eager_jobs5 --epochs 3 --jobs 5
LIMIT=200 b ro --epochs 3 --compile reduce-overhead
LIMIT=240 b ro_jobs5 --epochs 3 --compile reduce-overhead --jobs 5
python3 - <<'PY' 2>&1 | tee "$OUT/infer.txt"
import time, statistics, torch
from painmon.models import create_model, gradcam
m = create_model("dacnn").cuda().eval()
x = torch.randn(1, 3, 64, 64, device="cuda")
for name, fn in (("forward", lambda: m(x)), ("forward+gradcam", lambda: gradcam(m, x))):
    ts = []
    for i in range(230):
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.no_grad():
            fn()
        torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    print(f"torch cuda dacnn batch1 {name}: median {1000*statistics.median(ts[30:]):.3f} ms")
PY
for f in "$OUT"/*.log; do echo "== $f"; tail -3 "$f"; done
