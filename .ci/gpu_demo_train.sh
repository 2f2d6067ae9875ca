#!/usr/bin/env bash
# Trains DA-CNN candidates for the synthetic demo model on the lent GPU machine (not CI).
# Needs .devdata/crops40.npz (painmon crops) and .devdata/splits40.json (painmon split).
set -u
mkdir -p /tmp/pm && ln -sfn "$PWD" /tmp/pm/painmon && export PYTHONPATH=/tmp/pm
OUT=${OUT:-/tmp/out}
D=.devdata
common=(--manifest $D/crops40.npz --splits $D/splits40.json --device cuda --compile reduce-overhead)
python3 -m painmon train "${common[@]}" --out /tmp/runs/paper > /tmp/log_paper.txt 2>&1 &
python3 -m painmon train "${common[@]}" --lr 1e-3 --out /tmp/runs/lr1e-3 > /tmp/log_lr1e-3.txt 2>&1 &
python3 -m painmon train "${common[@]}" --lr 3e-4 --out /tmp/runs/lr3e-4 > /tmp/log_lr3e-4.txt 2>&1 &
wait
for r in paper lr1e-3 lr3e-4; do
  echo "== $r"; tr '\r' '\n' < /tmp/log_$r.txt | grep -v "batch/s\|s/batch\|it/s" | tail -3
  python3 -m painmon evaluate --run /tmp/runs/$r --manifest $D/crops40.npz --split test --json /tmp/runs/$r/test_metrics.json 2>&1 | tail -1
done
python3 - <<'PY'
import json, shutil, os
out = os.environ.get("OUT", "/tmp/out")
best = max(("paper", "lr1e-3", "lr3e-4"), key=lambda r: json.load(open(f"/tmp/runs/{r}/best.json"))["metrics"]["val_macro_f1"])
print("chosen by validation macro-F1:", best)
for r in ("paper", "lr1e-3", "lr3e-4"):
    os.makedirs(f"{out}/{r}", exist_ok=True)
    for f in ("best.json", "test_metrics.json"):
        if os.path.exists(f"/tmp/runs/{r}/{f}"):
            shutil.copy(f"/tmp/runs/{r}/{f}", f"{out}/{r}/{f}")
for f in ("best.safetensors", "history.csv"):
    shutil.copy(f"/tmp/runs/{best}/{f}", f"{out}/{best}/{f}")
PY
