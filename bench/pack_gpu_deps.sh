#!/usr/bin/env bash
# Packs the Python packages that the GPU machine lacks (NVIDIA DALI for CUDA 13
# with its codec libraries, webdataset, OmegaConf) into parts small enough to be
# carried one per device call (a transfer holds at most 64 MiB). From the
# project's root:
#
#   bash bench/pack_gpu_deps.sh [extra-pip-requirement ...]
#
# It writes .gpu-deps/part-00, part-01, ... (parts of at most 56 MiB) and adds
# /.gpu-deps/ to .git/info/exclude; bench/gpu.sh's header says how to send them.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
out=.gpu-deps
grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# The GPU image already has torch, torchvision, timm, accelerate, numpy, pyyaml,
# packaging, six, typing_extensions, safetensors, tqdm, rich, matplotlib and
# scikit-learn: these are only what it lacks (wandb too: pass it as an extra
# argument if a GPU run must log to W&B offline).
pkgs=("nvidia-dali-cuda130==2.4.0" "nvidia-nvimgcodec-cu13[all]>=0.9,<0.10"
      "nvidia-libnvcomp-cu13==5.3.0.16" astunparse gast optree nvtx makefun
      "libcst~=1.8" webdataset braceexpand omegaconf "$@")
python3 -m pip download -q --no-deps "${plat[@]}" -d "$tmp/whl" "${pkgs[@]}" 2>&1 | grep -v '^WARNING: Location' || true
python3 -m pip download -q "${plat[@]}" -d "$tmp/whl" "nvidia-nvimgcodec-cu13[all]>=0.9,<0.10" 2>&1 | grep -v '^WARNING: Location' || true
# OmegaConf's parser runtime is published as source only: build its pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w "$tmp/whl" "antlr4-python3-runtime==4.9.3"
n=$(ls "$tmp"/whl/nvidia_dali*.whl "$tmp"/whl/webdataset*.whl "$tmp"/whl/omegaconf*.whl 2>/dev/null | wc -l)
[ "$n" -eq 3 ] || { echo "pack-deps: a download failed (see above); nothing packed" >&2; exit 1; }
rm -f "$tmp"/whl/{numpy,packaging,PyYAML,pyyaml,six,typing_extensions,wheel}-*.whl
mkdir -p "$tmp/site"
for w in "$tmp"/whl/*.whl; do python3 -m zipfile -e "$w" "$tmp/site"; done
rm -rf "$out"; mkdir -p "$out"
tar -C "$tmp/site" -cf - . | xz -T0 -6 | split -b 56m -d - "$out/part-"
ls -l "$out"
echo "$(ls "$out" | wc -l) parts in $out: send each with its own device call (bench/gpu.sh, its header)"
