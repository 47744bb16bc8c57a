#!/usr/bin/env bash
# The GPU proof, in one device call of at most 9 minutes: versions, the `cuda` tests, the GPU
# benchmark (DataLoader with 16 workers, torchvision backend, dali; rotation 0 and 15) under
# `nvidia-smi dmon` (its jpg column shows the hardware JPEG decoder at work), the input path
# alone, all written under $OUT. Staging (here): bash benchmarks/stage_gpu.sh; carry the parts
# (.gpu/p1 with .gpu/extra, then .gpu/p2 ...), then run, from the repository root, with the
# device call's timeout at 560 s or more:
#   bash benchmarks/gpu_proof.sh
# Every step gets what is left of one deadline (BUDGET seconds from the start, default 520), so
# a slow step shortens the ones after it and the summary is always written.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
IMAGES=${IMAGES:-12000}
deadline=$((SECONDS + ${BUDGET:-520}))
left() { local s=$((deadline - SECONDS - $1)); echo $((s > 10 ? s : 10)); }  # $1: kept for later
step() { echo "== $* ($(date +%T), $((deadline - SECONDS)) s left)"; }

if ! python3 -c "import nvidia.dali" 2>/dev/null; then
  if [ ! -d /tmp/site/nvidia/dali ]; then
    # Parts are one tar split in order: part.00, part.01, ... (p10 sorts before p2 as a path).
    parts=$(find .gpu -name 'part.*' | awk -F/ '{print $NF" "$0}' | sort | cut -d' ' -f2)
    { cat $parts | tar xf - -C /tmp &&
      python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/whl/*.whl .gpu/extra/*.whl; } ||
      { echo "DALI is not staged: run benchmarks/stage_gpu.sh, carry .gpu/pK and .gpu/extra" | tee "$OUT/error.txt"; exit 1; }
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  step versions
  nvidia-smi
  timeout 60 python3 -m dali_loader.cli doctor
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|numpy|pillow|nvidia-dali|nvidia-nvimgcodec|simplejpeg) "
} > "$OUT/versions.txt" 2>&1

step "cuda tests" > "$OUT/tests.txt"
timeout "$(left 250)" python3 -m pytest -q -p no:cacheprovider -m cuda tests >> "$OUT/tests.txt" 2>&1
echo "exit $?" >> "$OUT/tests.txt"
step "GPU graphs built for real" >> "$OUT/tests.txt"
timeout "$(left 220)" python3 -m pytest -q -p no:cacheprovider tests/test_gpu_graphs.py >> "$OUT/tests.txt" 2>&1
echo "exit $?" >> "$OUT/tests.txt"

nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 &
dmon=$!
step bench > "$OUT/bench.txt"
timeout "$(left 40)" python3 -m dali_loader.cli bench --images "$IMAGES" --data-dir /tmp/bench \
  --epochs 3 --batch-size 256 --workers 16 --rotate 0 15 --loaders baseline torchvision dali \
  --out "$OUT" >> "$OUT/bench.txt" 2>&1
echo "exit $?" >> "$OUT/bench.txt"
kill "$dmon" 2>/dev/null
step "feed only" >> "$OUT/bench.txt"
rm -rf /tmp/feed
timeout "$(left 5)" python3 -m dali_loader.cli bench --feed-only --images "$IMAGES" \
  --data-dir /tmp/bench --epochs 3 --batch-size 256 --out /tmp/feed >> "$OUT/bench.txt" 2>&1
echo "exit $?" >> "$OUT/bench.txt"
cp /tmp/feed/bench.json "$OUT/feed-only.json" 2>/dev/null
step done >> "$OUT/bench.txt"
grep -hE "^\| |passed|failed|error|exit" "$OUT/tests.txt" "$OUT/bench.txt"
