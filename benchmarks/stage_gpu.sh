#!/usr/bin/env bash
# Stage what the GPU proof needs on a machine without network: DALI's CUDA 13 wheels in parts
# (../shared/gpu/stage-dali.sh: .gpu/p1 .. .gpu/pN) and, in .gpu/extra, the one dependency of
# ours that machine lacks (simplejpeg, the torchvision backend's JPEG decoder). Run from the root.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash "${STAGE_DALI:-../shared/gpu/stage-dali.sh}"
mkdir -p .gpu/extra
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/extra simplejpeg \
  2>&1 | grep -v '^WARNING: Location' || true
ls .gpu/extra/simplejpeg-*.whl || { echo "simplejpeg's wheel did not download" >&2; exit 1; }
echo "carry .gpu/p1 and .gpu/extra in the first call, then one .gpu/pK a call; see gpu_proof.sh"
