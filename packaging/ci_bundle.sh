#!/usr/bin/env bash
# Builds the Linux bedside bundle and starts it headless; prints size and startup times.
#   bash packaging/ci_bundle.sh            (PYTHON=... to pick the interpreter)
# Checks: --version, doctor (no errors), monitor on the synthetic patient, the window on
# the offscreen and (when Xvfb exists) xcb platforms, time to the first window paint, and
# that no torch/sklearn/scipy file slipped into the bundle.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
bundle="$repo/packaging/dist/painmon"
exe="$bundle/painmon"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PAINMON_CACHE="$work/cache" XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config"

t_start=$(date +%s)
bash "$repo/packaging/build_bundle.sh"
t_built=$(date +%s)

fail() { echo "ci_bundle: FAIL: $*" >&2; exit 1; }

for banned in torch torchvision sklearn scipy onnx; do
    [[ ! -e "$bundle/_internal/$banned" ]] || fail "$banned was bundled"
done
[[ -f "$bundle/_internal/painmon/models/demo/painmon_demo.onnx" ]] || fail "no demo model"
[[ -f "$bundle/_internal/painmon/assets/icon.png" ]] || fail "no icon"
ls "$bundle"/_internal/cv2/data/haarcascade_frontalface_default.xml >/dev/null || fail "no Haar data"

"$exe" --version | grep -q '^painmon [0-9]' || fail "--version"
"$exe" doctor --camera 99 > "$work/doctor.txt" || { cat "$work/doctor.txt"; fail "doctor"; }
"$exe" monitor --source synthetic --max-seconds 2 --out "$work/sessions" > "$work/monitor.txt" \
    || { cat "$work/monitor.txt"; fail "monitor"; }
ls "$work"/sessions/*/*/*.csv >/dev/null || fail "monitor wrote no session"

# The window: `timeout` ending it (124) after 5 s means it ran; anything else is a crash.
window_check() {
    local label=$1; shift
    set +e
    "$@" > "$work/$label.log" 2>&1
    local rc=$?
    set -e
    [[ $rc -eq 124 ]] || { cat "$work/$label.log"; fail "demo window ($label) exited with $rc"; }
    ! grep -Eq 'Traceback|Segmentation|Fatal|Could not load the Qt platform' "$work/$label.log" \
        || { cat "$work/$label.log"; fail "demo window ($label) logged a crash"; }
}
QT_QPA_PLATFORM=offscreen window_check offscreen timeout 5 "$exe" demo
if command -v xvfb-run >/dev/null; then
    window_check xcb xvfb-run -a env QT_QPA_PLATFORM=xcb timeout 5 "$exe" demo
fi

# Startup: median of 5 `--version` runs; time to the first paint of the demo window.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
version_s=$(for _ in 1 2 3 4 5; do
    s=$EPOCHREALTIME; "$exe" --version >/dev/null; e=$EPOCHREALTIME
    awk "BEGIN {print $e - $s}"
done | median)
paint_s=$(for _ in 1 2 3; do
    PAINMON_STARTUP_PROBE_T0=$EPOCHREALTIME QT_QPA_PLATFORM=offscreen timeout 60 "$exe" demo 2>&1 \
        | sed -n 's/^painmon startup probe: first paint after \([0-9.]*\) s$/\1/p'
done | median)
[[ -n "$paint_s" ]] || fail "the demo window never painted"

t_end=$(date +%s)
printf 'ci_bundle: OK\n  bundle %s (%s)\n  --version median of 5: %.3f s\n' \
    "$bundle" "$(du -sh "$bundle" | cut -f1)" "$version_s"
printf '  demo window first paint, median of 3: %.3f s\n' "$paint_s"
printf '  build %d s, checks %d s\n' $((t_built - t_start)) $((t_end - t_built))
