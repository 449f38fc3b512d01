#!/usr/bin/env bash
# What a session with a lent GPU machine measures for avstm, in one call whose steps are
# limited to 9 minutes in all (sized for a 16-core H100 machine): the GPU tests, then extraction
# with ResNet-152 (CPU decoding and NVDEC), decoding (CPU against NVDEC) and the training input
# (stored items, held tensors).
# Results go to $OUT (the device tool's folder; default /tmp/avstm-gpu): gpu.json and gpu.log.
#
#   bench/gpu_check.sh [--device cuda|cpu] [--quick]
#
# The lent machines' image lacks PyAV: put its wheel (and any other missing one) in .whl/, which
# git ignores, carry that folder, and this script installs them into a private folder first:
#   pip download --only-binary :all: --no-deps --python-version 3.12 -d .whl av==18.1.0
set -uo pipefail

DEVICE=cuda
QUICK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DEST="${OUT:-/tmp/avstm-gpu}"
mkdir -p "$DEST"
JSON="$DEST/gpu.json"
rm -f "$JSON"
if ! python3 -c "import av" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/avstm-site .whl/*.whl
  export PYTHONPATH="/tmp/avstm-site"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

FAILED=()
step() {  # step SECONDS NAME CMD...: time-limited, never stops the others
  local limit="$1" name="$2"; shift 2
  echo
  echo "=== $name (limit $limit s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED+=("$name(exit $rc)")
}

{
  echo "=== avstm GPU check on $(hostname), $(date -u +%FT%TZ); results -> $JSON"
  python3 - <<'EOF' || { echo "=== missing packages: see above"; exit 1; }
import importlib, os
missing = [m for m in ("torch", "av", "h5py", "cv2", "numpy", "click", "tqdm", "pytest") if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"missing: {', '.join(missing)} (put their wheels in .whl/)")
import torch, av
from av.codec.hwaccel import hwdevices_available
print(f"torch {torch.__version__}, av {av.__version__} (hardware devices: {hwdevices_available()}), "
      f"{os.cpu_count()} cores, gpu: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF
  step 60 tests python3 -m pytest -q -rs -p no:cacheprovider tests/test_hwdecode.py \
    "tests/test_memnet_train.py::test_gpu_input_paths_train_alike"
  step 140 extract python3 bench/bench_extract.py --device "$DEVICE" --backbone resnet152 --videos 96 \
    --batch-size 256 --json "$JSON" "${QUICK[@]}"
  step 100 extract_nvdec python3 bench/bench_extract.py --device "$DEVICE" --backbone resnet152 --videos 96 \
    --batch-size 256 --decode-device cuda --json "$JSON" "${QUICK[@]}"
  step 100 decode python3 bench/bench_decode.py --device "$DEVICE" --clips 64 --repeat 1 --json "$JSON" "${QUICK[@]}"
  step 140 reader python3 bench/bench_reader.py --device "$DEVICE" --batch 128 --videos 300 --workers 8 \
    --json "$JSON" "${QUICK[@]}"
  echo
  if [ ${#FAILED[@]} -eq 0 ]; then echo "=== all steps finished"; else echo "=== failed: ${FAILED[*]}"; fi
} 2>&1 | tee "$DEST/gpu.log"
