#!/usr/bin/env bash
# Everything fastclr checks and measures on the lent GPU machine, in one call.
#
# Here, once per session (about 3 minutes):
#   ../shared/gpu/pack-deps.sh pytest iniconfig pluggy     # DALI kit + test runner -> .gpu-deps/part-0K
#   mkdir -p .gpu-data && cp ../shared/data/cifar10-jpeg.tar.gz .gpu-data/
#   grep -qx '/.gpu-data/' .git/info/exclude || echo '/.gpu-data/' >> .git/info/exclude
# Then with the device tool, back to back (a reply with warm: false means start over):
#   carry [".gpu-deps/part-00"]  command: mkdir -p /tmp/deps && cp .gpu-deps/part-00 /tmp/deps/
#   carry [".gpu-deps/part-01"]  command: mkdir -p /tmp/deps && cp .gpu-deps/part-01 /tmp/deps/
#   carry [".gpu-deps/part-02"]  command: mkdir -p /tmp/deps && cp .gpu-deps/part-02 /tmp/deps/
#   carry [".gpu-data"]          command: bash bench/gpu.sh          (timeout_s 540)
# Results land in $OUT: JSON per benchmark, the test log, nvidia-smi. Copy the JSON
# to bench/results/ and the figures to BENCHMARKS.md with the device and commit.
set -uo pipefail
OUT=${OUT:-/tmp/fastclr-out}
mkdir -p "$OUT"
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -d "$SP/nvidia/dali" ]; then
  if [ -w "$SP" ]; then
    cat /tmp/deps/part-* | xz -d | tar -x --skip-old-files -C "$SP"
  else  # keep `nvidia` a namespace package spanning both folders
    mkdir -p /tmp/site && cat /tmp/deps/part-* | xz -d | tar -x --skip-old-files -C /tmp/site
    rm -f /tmp/site/nvidia/__init__.py
    export PYTHONPATH=/tmp/site
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=offline
python3 -c "import nvidia.dali, webdataset, omegaconf, torch; print('dali', nvidia.dali.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt" || exit 1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "commit $commit" >> "$OUT/versions.txt"
step() { echo "== $1 ($(date +%T))"; }

step "GPU tests"
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/pytest-gpu.txt"

DATA=/tmp/benchdata
mkdir -p "$DATA"
step "converter on $(nproc) cores"
timeout 200 python3 -m bench.convert --src .gpu-data/cifar10-jpeg.tar.gz --repeats 1 --workers 1 "$(nproc)" \
  --json "$OUT/convert-gpu-host.json" > /dev/null 2>"$OUT/convert.err" || tail -5 "$OUT/convert.err"

step "pipeline throughput: DALI on the GPU vs the DataLoader, batch 512"
timeout 300 python3 -m bench.pipeline --device cuda --src .gpu-data/cifar10-jpeg.tar.gz --data "$DATA" \
  --batch-size 512 --batches 40 --warmup 5 --repeats 3 --synthetic 4096 --threads "$(nproc)" \
  --json "$OUT/pipeline-gpu.json" 2>"$OUT/pipeline.err" | grep '^{"dataset"' || tail -5 "$OUT/pipeline.err"
step "short CIFAR-10 ResNet-18 pretrain: images/s, data wait, memory"
timeout 240 python3 -m launch pretrain data.train="$DATA/cifar10-raw" run_dir=/tmp/run-r18 epochs=3 \
  batch_size=512 precision=bf16 channels_last=true model.encoder=resnet18 model.cifar_stem=true \
  optim.name=lars optim.lr=0.3 optim.warmup_epochs=1 track.log_every=20 track.progress=false \
  data.num_threads=4 2>&1 | tail -8
cp /tmp/run-r18/metrics.jsonl "$OUT/pretrain-r18-metrics.jsonl" 2>/dev/null
step "done"
ls -l "$OUT"
