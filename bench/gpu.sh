#!/usr/bin/env bash
# Everything fastclr checks and measures on the lent GPU machine, in one call: `bash bench/gpu.sh [STAGE...]`.
#
# Here, once per session (about 3 minutes), from the project's root:
#   pack DALI, webdataset, OmegaConf, pytest, iniconfig and pluggy for the machine (it reaches no package
#   registry) as xz-compressed tar parts of site-packages, each under a transfer's limit: .gpu-deps/part-0K
#   mkdir -p .gpu-data && cp cifar10-jpeg.tar.gz .gpu-data/   # CIFAR-10 as train/ and test/ JPEG folders
#   x=$(git rev-parse --git-path info/exclude); grep -qx '/.gpu-data/' "$x" || echo '/.gpu-data/' >> "$x"
#   bash bench/gpu.sh pack      # writes .gpu-data/commit: the commit and whether the tree differs from it
# (re-run `pack` after every commit or edit: the copy sent has no .git, so that file is the only record
# of which code ran; gpu.sh refuses to start without it). Then with the device tool, back to back, one
# part per call (ls .gpu-deps: four parts in 2026-11; a reply with warm: false means start over):
#   run carry [".gpu-deps/part-00"]  command "mkdir -p /tmp/deps && cp .gpu-deps/part-00 /tmp/deps/"
#   run carry [".gpu-deps/part-01"]  command "mkdir -p /tmp/deps && cp .gpu-deps/part-01 /tmp/deps/"
#   run carry [".gpu-deps/part-02"]  command "mkdir -p /tmp/deps && cp .gpu-deps/part-02 /tmp/deps/"
#   run carry [".gpu-deps/part-03"]  command "mkdir -p /tmp/deps && cp .gpu-deps/part-03 /tmp/deps/"
#   run carry [".gpu-data"]          command "bash bench/gpu.sh"          timeout_s 420
#   run                              command "bash bench/gpu.sh compile"  timeout_s 200   (if >= 4 min left)
#   give_back
# The first call leaves time for a rerun if it breaks (none of this has run on a GPU yet: the CPU
# operators feeding a GPU, the graphed step and our LARS are new); the second needs the machine warm.
# then copy $OUT's JSON (files_at) to bench/results/ and render it with `python -m fastclr.bench.table FILE`.
#
# With no STAGE it runs the default sequence below, the stages that decide the most first, each under
# its own timeout (budgets, not measurements: set up ~50 s, then 160+40+60+70 s, about 6.5 minutes);
# `compile` comes next, in its own call (150 s).
# Every stage writes JSON into $OUT (bench/train.py and bench/pipeline.py row by row, so a stage cut
# short keeps what it measured), its stderr into $OUT/STAGE.err, and a line per result to stdout.
#   levers    ResNet-18, 32 px (cifar10-raw), batch 512, bf16, channels_last; model alone and through
#             DALI: first the first run's settings (timm's LARS, DALI ops on the GPU; 1 row,
#             train-levers-32-before.json), then our foreach LARS x DALI ops on the GPU or the CPU x
#             eager or the whole step as a CUDA graph (4 rows, train-levers-32.json); then ResNet-50 at
#             224 px, batch 128, DALI ops on the GPU vs the CPU (train-levers-224.json; with the 32 px
#             rows it sets pipelines' AUTO_CPU_MAX_SIDE)                                <= 30 + 85 + 45 s
#   pipeline  the input pipeline alone (target: 100k two-view img/s at 32 px): raw and JPEG CIFAR-10,
#             DALI ops on the GPU vs the CPU, prefetch 2. pipeline-gpu.json                  <= 40 s
#   tests     pytest -m "gpu and not slow": the GPU loaders (both augment devices), the no-host-sync
#             bench check, a graphed step giving eager's losses. pytest-gpu.txt              <= 60 s
#   pretrain  `fastclr pretrain` 3 epochs (auto augment device, our LARS), eager and with cuda_graphs,
#             each beside its bench row (same definition: two-view img/s across processes):
#             pretrain-vs-bench.json, pretrain-graphs-vs-bench.json, the metrics.jsonl  <= 2 x 35 s
# The next call:
#   compile   the compiled step's GPU tests (pytest -m "gpu and slow", small CNN, <= 50 s), then
#             ResNet-18 at 32 px compiled in default and reduce-overhead mode: first-step seconds
#             (compilation) apart from steady-state img/s. train-compile-32.json      <= 50 + 100 s
# Further stages, for a later call while the machine stays warm (none fits the default call):
#   profile   torch.profiler over 10 steps of ResNet-18 at 32 px through DALI, DALI ops on the GPU then
#             the CPU: the kernels that take the GPU's time (DALI's included) and how busy it is;
#             profile-32-gpu.json (+ its Chrome trace), profile-32-cpu.json                  <= 2 x 30 s
#   batch     larger batches (the lr rule scales the lr): ResNet-18 at 32 px, batch 1024 and 2048,
#             our LARS, DALI ops on the CPU, eager and graphed; train-batch-1024.json, -2048.json <= 2 x 60 s
#   autotune  compile max-autotune, ResNet-18 32 px                                          <= 300 s
#   prefetch  pipeline alone at prefetch 1, 2, 4 and DALI threads 4, 8, 16 (CPU ops)         <= 120 s
#   tta       time to accuracy, CIFAR-10 ResNet-18 recipe, chunks of 5 epochs; rerun to continue <= 130 s
#   matrix    bench/train.py, ResNet-18/34/50 at 32 and 224 px, eager and graphed           <= 420 s
#   convert   the shard converter on all cores                                              <= 150 s
#   views     time to accuracy for V = 2, 4, 8 views per image, the recipe at equal compute
#             (V x epochs = 48, so each schedule ends at the same work) and the same 60 s
#             training budget each, 4 points a curve; its own call                        <= 3 x 170 s
#   accuracy  the accuracy targets: the anchor's 100-epoch recipe to the end, chunks of 20 epochs, kNN both
#             ways + linear per chunk, projection to 1000 epochs (ACC=lars: our LARS instead);
#             alone in its call (timeout_s 590); rerun to continue a timed-out run    <= 520 s
#   brows     experiment B5 by `fastclr run`: 100 epochs + 50-epoch augmented linear
#             (B1-B4 need an ImageNet weights file: none here); rerun to continue   <= 560 s
#   probe     the online probe's cost: pretrain images/s with it off and on, batch 512   <= 150 s
#   bablations B6 and B7 by `fastclr sweep`, 4 points each at 10 of their 100 epochs   <= 560 s
set -uo pipefail
if [ "${1:-}" = pack ]; then  # here, not on the GPU machine: record which code is sent
  mkdir -p .gpu-data
  commit=$(git rev-parse --short HEAD) || exit 1
  [ -z "$(git status --porcelain --untracked-files=normal -- . ':!.gpu-data' ':!.gpu-deps')" ] || commit="$commit-dirty"
  echo "$commit" > .gpu-data/commit
  echo "commit $commit written to .gpu-data/commit"
  exit 0
fi
OUT=${OUT:-/tmp/fastclr-out}
mkdir -p "$OUT"
if [ ! -s .gpu-data/commit ]; then
  echo "no .gpu-data/commit: run 'bash bench/gpu.sh pack' in the project before sending .gpu-data" | tee "$OUT/error.txt"
  exit 1
fi
export FASTCLR_COMMIT=$(cat .gpu-data/commit)  # the benches' JSON reads it (bench/convert.py)
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
python3 -c "import nvidia.dali, webdataset, omegaconf, torch, timm; print('dali', nvidia.dali.__version__, 'torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt" || exit 1
echo "commit $FASTCLR_COMMIT" | tee -a "$OUT/versions.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step() { echo "== $1 ($(date +%T))"; }

stages=${*:-levers pipeline tests pretrain}
DATA=/tmp/benchdata
mkdir -p "$DATA"
SRC=.gpu-data/cifar10-jpeg.tar.gz
if [[ " $stages " =~ \ (levers|pipeline|pretrain|compile|profile|batch|prefetch|matrix)\  ]]; then
  step "shards"  # made once per machine: CIFAR-10 as JPEG and raw, 2,048 synthetic 224 px JPEGs
  timeout 120 python3 -m fastclr.bench.pipeline --src "$SRC" --data "$DATA" --synthetic 2048 --only none > /dev/null \
    2>"$OUT/shards.err" || { tail -5 "$OUT/shards.err"; exit 1; }
fi

# bf16, channels_last, every timed step under the no-host-sync check
train() {  # NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m fastclr.bench.train --device cuda --src "$SRC" --data "$DATA" --synthetic 2048 \
    --precision bf16 --channels-last --batch-size 512 --batch-size-224 128 --modes model dali \
    "$@" --json "$OUT/$name.json" 2>"$OUT/$name.err" | grep '^{"dataset"' || tail -5 "$OUT/$name.err"
}
pipeline() {  # NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m fastclr.bench.pipeline --device cuda --src "$SRC" --data "$DATA" --synthetic 2048 \
    --batch-size 512 --batches 40 --warmup 5 --repeats 3 --loaders dali "$@" --json "$OUT/$name.json" \
    2>"$OUT/$name.err" | grep '^{"dataset"' || tail -5 "$OUT/$name.err"
}
pretrain() {  # NAME TIMEOUT CONFIG...: 3 epochs, then its logged speed beside the matching levers row
  local name=$1 limit=$2; shift 2
  rm -rf "/tmp/$name"
  timeout "$limit" python3 -m fastclr pretrain data.train="$DATA/cifar10-raw" run_dir="/tmp/$name" epochs=3 \
    batch_size=512 precision=bf16 channels_last=true model.encoder=resnet18 model.cifar_stem=true \
    optim.name=lars optim.lr=0.3 optim.warmup_epochs=1 track.log_every=20 track.progress=false "$@" \
    > "$OUT/$name.log" 2>&1 || tail -5 "$OUT/$name.log"
  cp "/tmp/$name/metrics.jsonl" "$OUT/$name-metrics.jsonl" 2>/dev/null
}
speed() {  # NAME MATCH...: pretrain's median logged img/s (epochs 2-3) beside the bench's DALI figure
  local name=$1; shift
  python3 -m fastclr.bench.pretrain_speed --run-dir "/tmp/$name" --bench "$OUT/train-levers-32.json" \
    --match model=resnet18 compile=false optimizer=lars "$@" --json "$OUT/$name-vs-bench.json" \
    2>>"$OUT/$name.log" | grep -E '"(images_per_s|dali_images_per_s|pretrain_over_bench)"'
}

for stage in $stages; do
  case $stage in
  levers)
    step "levers at 32 px: the first run's settings (timm's LARS, DALI ops on the GPU), then ours, CPU ops, graphs"
    r18=(--datasets cifar10-raw --models resnet18 --steps 30 --warmup 10 --repeats 3)
    train train-levers-32-before 30 "${r18[@]}" --optimizers lars_timm --augment-devices gpu
    train train-levers-32 85 "${r18[@]}" --optimizers lars --augment-devices gpu cpu --graphs off on
    step "levers at 224 px: DALI ops on GPU vs CPU"
    train train-levers-224 45 --datasets synthetic224-jpeg --models resnet50 --steps 15 --warmup 5 \
      --repeats 2 --augment-devices gpu cpu ;;
  pipeline)
    step "input pipeline alone, batch 512: DALI ops on GPU vs CPU"
    pipeline pipeline-gpu 40 --only cifar10-raw cifar10-jpeg --augment-devices gpu cpu ;;
  tests)
    step "GPU tests"
    timeout 60 python3 -m pytest -q -m "gpu and not slow" tests/ -p no:cacheprovider --durations=8 2>&1 \
      | tail -40 | tee "$OUT/pytest-gpu.txt" | tail -4 ;;
  pretrain)
    step "fastclr pretrain, 3 epochs, eager then graphed, each beside its bench row"
    pretrain pretrain 35 data.augment_device=auto
    speed pretrain cuda_graphs=false augment_device=cpu
    pretrain pretrain-graphs 35 data.augment_device=auto cuda_graphs=true
    speed pretrain-graphs cuda_graphs=true augment_device=cpu ;;
  compile)
    step "compiled step: GPU tests, then first-step seconds and steady state (default, reduce-overhead)"
    timeout 50 python3 -m pytest -q -m "gpu and slow" tests/ -p no:cacheprovider 2>&1 | tail -15 \
      | tee "$OUT/pytest-gpu-compile.txt" | tail -2
    train train-compile-32 100 --datasets cifar10-raw --models resnet18 --steps 30 --warmup 10 --repeats 3 \
      --compile default reduce-overhead ;;
  profile)
    step "profile ResNet-18 at 32 px through DALI: GPU ops, then CPU ops"
    for device in gpu cpu; do
      trace=(); [ "$device" = gpu ] && trace=(--trace "$OUT/profile-32-gpu-trace.json")
      timeout 30 python3 -m fastclr.bench.profile --device cuda --src "$SRC" --data "$DATA" --synthetic 2048 \
        --precision bf16 --channels-last --batch-size 512 --steps 10 --warmup 10 --augment-device "$device" \
        ${trace[@]+"${trace[@]}"} --json "$OUT/profile-32-$device.json" 2>"$OUT/profile-$device.err" \
        | grep -E '"(images_per_s|device_busy)"' || tail -3 "$OUT/profile-$device.err"
    done
    gzip -f "$OUT/profile-32-gpu-trace.json" 2>/dev/null ;;
  batch)
    step "larger batches at 32 px"
    for batch in 1024 2048; do
      train "train-batch-$batch" 60 --datasets cifar10-raw --models resnet18 --steps 20 --warmup 8 --repeats 3 \
        --batch-size "$batch" --augment-devices cpu --graphs off on
    done ;;
  autotune)
    step "compile max-autotune at 32 px"
    train train-autotune-32 300 --datasets cifar10-raw --models resnet18 --steps 30 --warmup 10 --repeats 3 \
      --compile max-autotune ;;
  prefetch)
    step "input pipeline alone: prefetch depth and DALI threads (CPU ops at 32 px)"
    for depth in 1 4; do pipeline "pipeline-prefetch-$depth" 30 --only cifar10-raw --augment-devices gpu cpu --prefetch "$depth"; done
    for threads in 4 8; do pipeline "pipeline-threads-$threads" 20 --only cifar10-raw --augment-devices cpu --threads "$threads"; done ;;
  tta)
    step "time to accuracy, CIFAR-10 ResNet-18 (continues /tmp/tta-r18 if there)"
    timeout 130 python3 -m fastclr.bench.time_to_accuracy --config launch/configs/simclr_cifar10_resnet18.yaml \
      --src "$SRC" --data "$DATA" --run-dir /tmp/tta-r18 --chunk-epochs 5 --budget-seconds 40 \
      --json "$OUT/tta-r18.json" --plot "$OUT/tta-r18.png" 2>"$OUT/tta.err" | grep '^{"global_step"' \
      || tail -5 "$OUT/tta.err"
    cp /tmp/tta-r18/time_to_accuracy.json "$OUT/tta-r18-curve.json" 2>/dev/null ;;  # kept even on a timeout
  matrix)
    step "ResNet-18/34/50 at 32 and 224 px, eager and graphed"
    train train-matrix 420 --datasets cifar10-raw synthetic224-jpeg --models resnet18 resnet34 resnet50 \
      --steps 20 --warmup 10 --repeats 2 --graphs off on ;;
  convert)
    step "converter on $(nproc) cores"
    timeout 150 python3 -m fastclr.bench.convert --src "$SRC" --repeats 1 --workers 1 "$(nproc)" \
      --json "$OUT/convert-gpu-host.json" > /dev/null 2>"$OUT/convert.err" || tail -5 "$OUT/convert.err" ;;
  views)
    step "time to accuracy at equal training seconds: V = 2, 4, 8 views of every image"
    for spec in 2:24:1.2:6 4:12:0.6:3 8:6:0.3:1.5; do  # views:epochs:warm-up (the recipe's 1/20):chunk
      IFS=: read -r v epochs warmup chunk <<< "$spec"
      timeout 170 python3 -m fastclr.bench.time_to_accuracy --config launch/configs/simclr_cifar10_resnet18.yaml \
        --src "$SRC" --data "$DATA" --run-dir "/tmp/views-$v" --chunk-epochs "$chunk" --budget-seconds 60 \
        data.views="$v" epochs="$epochs" optim.warmup_epochs="$warmup" data.num_threads=4 \
        --json "$OUT/views-$v.json" --plot "$OUT/views-$v.png" 2>"$OUT/views-$v.err" | grep '^{"global_step"' \
        || tail -5 "$OUT/views-$v.err"
      cp "/tmp/views-$v/time_to_accuracy.json" "$OUT/views-$v-curve.json" 2>/dev/null  # kept on a timeout
    done ;;
  accuracy)  # the accuracy targets: ~10 s start + 100 x ~2.2 s training + 5 x ~15 s (chunk start, evaluation), shards once
    step "time to accuracy, the anchor's 100-epoch recipe (${ACC:-sgd}; continues /tmp/acc-${ACC:-sgd})"
    acc=(--config launch/configs/anchor_simclr_cifar10_100ep.yaml)
    [ "${ACC:-sgd}" = lars ] && acc+=(optim.name=lars optim.lr=0.4 optim.weight_decay=1.0e-5 optim.warmup_epochs=10)
    timeout 520 python3 -m fastclr.bench.time_to_accuracy "${acc[@]}" --src "$SRC" --data "$DATA" \
      --run-dir "/tmp/acc-${ACC:-sgd}" --chunk-epochs 20 --project-epochs 1000 data.num_threads=4 \
      --json "$OUT/accuracy-${ACC:-sgd}.json" --plot "$OUT/accuracy-${ACC:-sgd}.png" 2>"$OUT/accuracy.err" \
      | grep '^{"global_step"' || tail -5 "$OUT/accuracy.err"
    cp "/tmp/acc-${ACC:-sgd}/time_to_accuracy.json" "$OUT/accuracy-${ACC:-sgd}-curve.json" 2>/dev/null
    cp "/tmp/acc-${ACC:-sgd}/metrics.jsonl" "$OUT/accuracy-${ACC:-sgd}-metrics.jsonl" 2>/dev/null ;;
  probe)
    step "online probe cost: ResNet-18, 32 px, batch 512, off and on"
    timeout 150 python3 -m fastclr.bench.probe --device cuda --size 32 --batch-size 512 --steps 60 --log-every 10 \
      --repeats 2 --threads 4 --json "$OUT/probe-gpu.json" 2>"$OUT/probe.err" | grep ratio_on_off \
      || tail -5 "$OUT/probe.err" ;;
  brows|bablations)  # B rows through fastclr, on the shards the accuracy stage makes (made here if missing)
    python3 -c "import sys; from pathlib import Path; from bench.time_to_accuracy import cifar_shards
cifar_shards(Path(sys.argv[1]), Path(sys.argv[2]))" "$SRC" "$DATA" || { echo "no CIFAR-10 shards"; continue; }
    mkdir -p "$DATA/b" && ln -sfn "$DATA/cifar10-raw" "$DATA/b/cifar10-train" \
      && ln -sfn "$DATA/cifar10-test-raw" "$DATA/b/cifar10-test"
    if [ "$stage" = brows ]; then  # ~100 x 2.8 s + 10 kNN checks + 50 augmented linear epochs
      step "EXPERIMENTS.md B5 (continues /tmp/b5)"
      echo "B1-B4: not run: they start from an ImageNet weights file (weights/resnet18-imagenet.pth), none here" \
        | tee "$OUT/brows.txt"
      timeout 560 python3 -m fastclr run --config launch/configs/b5_resnet18_scratch.yaml data="$DATA/b" \
        runs=/tmp/b5 data.num_threads=4 track.progress=false 2>&1 | tail -4 | tee -a "$OUT/brows.txt"
      cp /tmp/b5/experiment.json "$OUT/b5-experiment.json" 2>/dev/null
      cp /tmp/b5/pretrain/metrics.jsonl "$OUT/b5-metrics.jsonl" 2>/dev/null
    else  # 4 points each of ~10 x 2.8 s + a 10-epoch augmented linear: labelled 10ep, not the rows' 100
      step "EXPERIMENTS.md B6/B7 at 10 of their 100 epochs"
      for row in b6_augmentation_ablation b7_head_ablation; do
        timeout 270 python3 -m fastclr sweep --config "launch/configs/$row.yaml" data="$DATA/b" \
          runs="/tmp/$row" epochs=10 knn_every=10 linear.epochs=10 data.num_threads=4 track.progress=false \
          --eval linear 2>&1 | tail -3 | tee -a "$OUT/bablations.txt"
        cp "/tmp/$row/sweep/sweep.json" "$OUT/$row-10ep-sweep.json" 2>/dev/null
        cp "/tmp/$row/sweep/results.md" "$OUT/$row-10ep-results.md" 2>/dev/null
      done
    fi ;;
  *) echo "unknown stage $stage (levers pipeline tests pretrain compile profile batch autotune prefetch tta" \
       "matrix convert views accuracy probe brows bablations)" ;;
  esac
done
step "done"
ls -l "$OUT"
