#!/usr/bin/env bash
# Run every avstm benchmark on the device present and collect the figures in one JSON file.
#
#   bench/run_all.sh [--device auto|cpu|cuda] [--json PATH] [--quick] [--compile] [--only NAMES]
#
# --json defaults to $AVSTM_BENCH_JSON or ./bench-results.json; clips and caches go to
# $AVSTM_BENCH_WORK (default /tmp/avstm-bench) and are reused. Each benchmark has a time limit
# ($AVSTM_BENCH_LIMIT seconds, default 600); one that fails or times out is reported and the
# others still run. --compile adds a torch.compile run of the ResNet-152 extraction (CUDA).
# --only takes a comma-separated subset of: extract_resnet152,extract_lite0,decode,extract_nvdec (CUDA),
# memnet,reader,localize.
set -uo pipefail

DEVICE=auto
JSON="${AVSTM_BENCH_JSON:-bench-results.json}"
QUICK=()
COMPILE=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --json) JSON="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --compile) COMPILE=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
LIMIT="${AVSTM_BENCH_LIMIT:-600}"
JSON="$(python -c 'import os,sys; print(os.path.abspath(sys.argv[1]))' "$JSON")"
rm -f "$JSON"

if [ "$DEVICE" = auto ]; then
  DEVICE=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi

echo "=== avstm benchmarks on $DEVICE ($(date -u +%FT%TZ)); results -> $JSON"
python - <<'EOF' || { echo "=== missing packages: cannot run the benchmarks"; exit 1; }
import os, torch, av, h5py, cv2, numpy, avstm
print(f"python ok: torch {torch.__version__}, av {av.__version__}, h5py {h5py.__version__}, "
      f"numpy {numpy.__version__}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    print(f"gpu: {torch.cuda.get_device_name(0)}")
print(f"load average: {os.getloadavg()}")
EOF

CORES=$(python -c 'import os; print(os.cpu_count())')
FAILED=()
run() {  # run NAME CMD...: time-limited, never stops the others
  local name="$1"; shift
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then return; fi
  echo
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$LIMIT" "$@" --device "$DEVICE" --json "$JSON" "${QUICK[@]}"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED+=("$name(exit $rc)")
}

if [ "$DEVICE" = cuda ]; then
  run extract_resnet152 python bench/bench_extract.py --backbone resnet152 --videos 96 --batch-size 256
  if [ $COMPILE = 1 ]; then
    run extract_resnet152 python bench/bench_extract.py --backbone resnet152 --videos 96 --batch-size 256 --compile
  fi
  run memnet python bench/bench_memnet.py --batch 128
  run reader python bench/bench_reader.py --batch 128 --videos 150 --workers 8
  run extract_lite0 python bench/bench_extract.py --backbone efficientnet_lite0 --videos 96 --batch-size 256
  run decode python bench/bench_decode.py --clips $((4 * CORES))
  run extract_nvdec python bench/bench_extract.py --backbone resnet152 --videos 96 --batch-size 256 --decode-device cuda
else
  run extract_resnet152 python bench/bench_extract.py --backbone resnet152 --videos 3 --batch-size 16
  run extract_lite0 python bench/bench_extract.py --backbone efficientnet_lite0 --videos 4 --batch-size 32
  run decode python bench/bench_decode.py --clips $((2 * CORES))
  run memnet python bench/bench_memnet.py --batch 16
  run reader python bench/bench_reader.py --batch 16 --videos 48 --workers 2
fi
if [ "$DEVICE" = cuda ]; then
  run localize python bench/bench_localize.py --backbone resnet152 --rpn
else
  run localize python bench/bench_localize.py --backbone efficientnet_lite0 --seconds 3
fi

echo
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "=== all benchmarks finished; results in $JSON"
else
  echo "=== finished with failures: ${FAILED[*]}; results of the others in $JSON"
  exit 1
fi
