#!/usr/bin/env bash
# Builds the bedside bundle (one folder, no PyTorch) into packaging/dist/painmon/.
#   bash packaging/build_bundle.sh            # Linux; on Windows run it from Git Bash
# Needs the painmon environment plus PyInstaller (`pip install -e ".[packaging]"`).
# PAINMON_BUNDLE_ORT_GPU=1 keeps ONNX Runtime's CUDA provider (+270 MB).
# Writes only under packaging/build/ and packaging/dist/ (both git-ignored).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
build="$repo/packaging/build"
stage="$build/stage"

# Stage a normal (non-editable) install: PyInstaller cannot follow setuptools' editable
# finder, and the bundle then holds exactly what the wheel ships (demo model, assets).
rm -rf "$stage" "$build/wheel"
"$python" -m pip wheel --no-deps --no-build-isolation --quiet --wheel-dir "$build/wheel" "$repo"
"$python" -m pip install --no-deps --no-compile --quiet --target "$stage" "$build"/wheel/painmon-*.whl

export PAINMON_STAGE="$stage"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$repo/packaging/dist" --workpath "$build/pyinstaller" \
    "$repo/packaging/painmon.spec"
echo "bundle: $repo/packaging/dist/painmon/ ($(du -sh "$repo/packaging/dist/painmon" | cut -f1))"
