#!/usr/bin/env bash
# Everything fastclr checks and measures on a lent GPU machine, in stages: `bash bench/gpu.sh [STAGE...]`;
# `OUT=DIR bash bench/gpu.sh dry-run [STAGE...]` runs the same stages here, on the CPU, at tiny sizes.
#
# THE FIRST SESSION (15 minutes of device time: start, transfers, idle and give-back all count)
# Here, once (about 3 minutes), from the project's root:
#   bash bench/pack_gpu_deps.sh pytest iniconfig pluggy     # DALI kit + test runner -> .gpu-deps/part-0K
#   mkdir -p .gpu-data && cp PATH/cifar10-jpeg.tar.gz .gpu-data/   # CIFAR-10 as train/ and test/ JPEG folders
#   x=$(git rev-parse --git-path info/exclude); grep -qx '/.gpu-data/' "$x" || echo '/.gpu-data/' >> "$x"
#   bash bench/gpu.sh pack      # writes .gpu-data/commit: the commit and whether the tree differs from it
#   OUT=/tmp/dry bash bench/gpu.sh dry-run                  # the whole plan on the CPU: must end "0 failed"
# (re-run `pack` after every commit or edit: the copy sent has no .git, so that file is the only record
# of which code ran; gpu.sh refuses to start without it). Then the device tool's calls, back to back
# (each within the 30 s the machine stays warm; a reply with warm: false means start over):
#   call  carry / command                                             timeout_s  budget s  total s
#   T1    [".gpu-deps/part-00"]  mkdir -p /tmp/deps && cp .gpu-deps/part-00 /tmp/deps/   120    150    150
#   T2    [".gpu-deps/part-01"]  (the same for part-01)                          60     45    195
#   T3    [".gpu-deps/part-02"]  (the same for part-02)                          60     45    240
#   T4    [".gpu-deps/part-03"]  (the same for part-03)                          60     45    285
#   C1    [".gpu-data"]  LIMIT=$((S - 20)) bash bench/gpu.sh                     S    S + 15   750
#         S = min(600, budget_left_s of T4's reply - 150); with the budgets above S = 465, LIMIT = 445:
#         set-up ~45 s, tests <= 120 s (~100), accuracy <= 400 s (~300); levers, pretrain and
#         pipeline get whatever is left (a stage cut at LIMIT keeps its rows; one with no time is
#         skipped, and says so). When the transfers cost less than budgeted, S grows to 600.
#   margin  150 s: one warm rerun of 120 s (`LIMIT=100 bash bench/gpu.sh tests` after a flaky test,
#         or `LIMIT=100 bash bench/gpu.sh accuracy`, which continues its curve from /tmp), then
#         give_back at once (the idle 30 s count too).
# Where the budgets come from: 900 s a session, 600 s a call, 30 s warm after a call, and "a minute or
# more" to start a machine: the device tool's own notes. The kit is
# 4 parts of about 47 MB (188 MB in 2026-11) and a transfer holds at most 64 MiB: the GPU machine's
# notes. A transfer call was not timed on its own: the first session (start, 3 kit transfers, then
# calls whose stages ran about 12 minutes) took about 14 minutes in all, so the 150 + 3 x 45 s above
# are upper bounds rather than measurements. Set-up (kit unpack, CIFAR-10 shards on 16 cores) and the
# stages' seconds come from that session's figures (epochs of 2.2 s at 32 px, 34 s of GPU tests).
# Then copy the archive's JSON (files_at) to bench/results/ and render it: `python -m fastclr.bench.table`.
# Compile is left out of the first session: a cold inductor compile of ResNet-18 did not finish in
# 150 s once. It gets a call of its own once the rest is measured: `LIMIT=300 bash bench/gpu.sh compile`
# (BENCHMARKS.md, "On the next GPU session", lists every later call).
#
# WHAT COMES BACK (at most 8 files return from $OUT, and output_tail keeps the last 12,000 characters)
#   $OUT/summary.txt       a line a stage (status, seconds), then its key figures; printed last, too
#   $OUT/results-1.tar     every stage's files under STAGE/, appended as each stage ends (a call cut
#                          at its limit keeps every finished stage); -2.tar, ... past 12 MiB each
# Stdout carries a line per stage and command, failures with their last lines, then the summary.
# Env: OUT (default /tmp/fastclr-out), LIMIT (seconds the call may take: each command's timeout is cut
# to fit, leaving 15 s to pack), ACC (accuracy: sgd, the anchor's own recipe, or lars, its LARS
# variant), COMPILE_MODE (compile: default), PYTHON (default python3).
#
# STAGES, by what users most want to know (the default call runs the first five, in this order):
#   tests     pytest -m "gpu and not slow" over the files holding GPU tests: graphed step, the loaders
#             with both augment devices, N views, the probe in a graphed run, no host sync  <= 120 s
#   accuracy  the anchor's 100-epoch recipe (launch/configs/anchor_simclr_cifar10_100ep.yaml) on the
#             eager path that already ran on a GPU (DALI ops on the GPU, no graph): chunks of 20
#             epochs, kNN both ways and the linear probe per chunk, the curve against training
#             seconds, a labelled projection to 1000 epochs; ACC=lars for our LARS       <= 400 s
#   levers    ResNet-18, 32 px, batch 512, bf16, channels_last, model alone and through DALI: timm's
#             LARS and ours x DALI ops on the GPU and the CPU x eager or the step as one CUDA graph
#             (6 rows; the first is the first session's settings); ResNet-50 at 224 px, batch 128, ops
#             on the GPU and the CPU (they set pipelines' AUTO_CPU_* constants)        <= 150 + 60 s
#   pretrain  `fastclr pretrain` 3 epochs (augment_device auto, our LARS), eager, then cuda_graphs,
#             each beside its levers row (pretrain_speed)                            <= 2 x (45 + 20) s
#   pipeline  the input pipeline alone (target 100k two-view img/s at 32 px): raw and JPEG CIFAR-10,
#             DALI ops on the GPU and the CPU                                                 <= 45 s
# Later calls (each alone or two to a call; LIMIT as above):
#   compile   ResNet-18 at 32 px compiled (COMPILE_MODE, default `default`; max-autotune needs a
#             longer call): first-step seconds apart from steady state; then the compiled step's GPU
#             tests (pytest -m "gpu and slow")                                        <= 280 + 120 s
#   views     time to accuracy for data.views 2, 4, 8 at equal compute (V x epochs = 48, warm-up
#             1/20), 60 s of training each, the recipe of simclr_cifar10_resnet18      <= 3 x 150 s
#   batch     batches of 1024 and 2048 at 32 px (the lr rule scales the lr), ops on the CPU, eager
#             and graphed                                                                   <= 150 s
#   prefetch  DALI prefetch 1 and 4 end to end (ops on the GPU and the CPU); the pipeline alone with
#             CPU ops at 4, 8, 14 threads (their rate per thread sets AUTO_CPU_MIN_CORES) <= 120 + 60 s
#   profile   torch.profiler over 10 steps at 32 px through DALI, ops on the GPU then the CPU: the
#             kernels that take the GPU's time and how busy it is                      <= 2 x 40 s
#   probe     the online probe's cost: pretrain images/s with it off and on, batch 512     <= 150 s
# The dry run: the tiny data (bench/tiny_cifar.py), the commit from git, the same stages, scripts,
# arguments and file layout on the CPU at tiny sizes (small_cnn, batch 8, a step or two, 2 epochs),
# FASTCLR_CPU_GRAPHS=1 so the graphed rows run GraphedStep without capture, aot_eager for compile;
# its exit code is non-zero when any stage fails. tests/test_bench.py runs it (slow-marked).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1  # the project's root: a checkout here, or the copy on the GPU machine
PY=${PYTHON:-python3}

tree_commit() {  # the checkout's commit, "-dirty" when the tree differs from it
  local commit
  commit=$(git rev-parse --short HEAD) || return 1
  [ -z "$(git status --porcelain --untracked-files=normal -- . ':!.gpu-data' ':!.gpu-deps')" ] || commit="$commit-dirty"
  echo "$commit"
}

mode=gpu
case "${1:-}" in
  pack)  # here, not on the GPU machine: record which code is sent
    mkdir -p .gpu-data && tree_commit > .gpu-data/commit || exit 1
    echo "commit $(cat .gpu-data/commit) written to .gpu-data/commit"
    exit 0 ;;
  dry-run) mode=dry; shift ;;
esac
stages=${*:-tests accuracy levers pretrain pipeline}
OUT=${OUT:-/tmp/fastclr-out}
mkdir -p "$OUT" || exit 1
START=$SECONDS
for package in shards pipelines encoders trainers launch bench; do  # a copy may arrive without links
  [ -e "fastclr/$package" ] || ln -s "../$package" "fastclr/$package"
done

# --- the machine: the kit and the data on the GPU, tiny data and a scratch folder here ---------------
if [ "$mode" = dry ]; then
  ROOT=$(mktemp -d /tmp/fastclr-dry.XXXXXX) || exit 1
  trap 'rm -rf "$ROOT"' EXIT
  DATA=$ROOT/data RUNS=$ROOT/runs WORK=$ROOT/work SRC=$ROOT/cifar10-tiny.tar.gz
  FASTCLR_COMMIT=$(tree_commit) || { echo "dry-run: no git checkout to read the commit from"; exit 1; }
  export FASTCLR_COMMIT FASTCLR_CPU_GRAPHS=1  # the graphed rows: GraphedStep's buffers, no capture
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=offline
  "$PY" -m fastclr.bench.tiny_cifar "$SRC" > /dev/null || exit 1
else
  DATA=/tmp/benchdata RUNS=/tmp/fastclr-runs WORK=/tmp/fastclr-work SRC=.gpu-data/cifar10-jpeg.tar.gz
  if [ ! -s .gpu-data/commit ]; then
    echo "no .gpu-data/commit: run 'bash bench/gpu.sh pack' in the project before sending .gpu-data" \
      | tee "$OUT/summary.txt"
    exit 1
  fi
  export FASTCLR_COMMIT=$(cat .gpu-data/commit)  # the benches' JSON reads it (bench/convert.py)
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
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
fi
mkdir -p "$DATA" "$RUNS" "$WORK"

# --- sizes: the GPU's, or the dry run's (same arguments, tiny values) --------------------------------
if [ "$mode" = dry ]; then
  DEVICE=cpu PREC=fp32 LAYOUT=--no-channels-last ENC=small_cnn ENC224=small_cnn B32=8 B224=2 SYN=8
  TIMED=(--steps 1 --warmup 1 --repeats 1) TIMED224=(--steps 1 --warmup 1 --repeats 1)
  PIPE=(--batches 2 --warmup 1 --repeats 1) BIG=(8 16) DEPTHS=(1 3) THREADS=(1 2)
  BACKEND=(--compile-backend aot_eager)  # inductor's code generation takes minutes on a CPU
  TINY=(epochs=2 batch_size=8 precision=fp32 channels_last=false cpu=true model.encoder=small_cnn
    model.hidden_dim=32 model.out_dim=16 data.num_threads=1)
  EVAL=(--chunk-epochs 1 --probe-epochs 5 --knn-k 5 --eval-batch-size 16)
  VIEW_SPECS="2:2:0:1 4:1:0:1 8:1:0:1" VIEW_BUDGET=60  # views:epochs:warm-up:chunk
  PRETRAIN=(epochs=2 batch_size=8 precision=fp32 channels_last=false cpu=true model.encoder=small_cnn
    data.num_threads=1 track.log_every=2)
  PROFILE=(--steps 1 --warmup 1 --top 5) PROBE=(--encoder small_cnn --size 16 --batch-size 8 --steps 4
    --log-every 2 --repeats 1 --threads 1)
else
  DEVICE=cuda PREC=bf16 LAYOUT=--channels-last ENC=resnet18 ENC224=resnet50 B32=512 B224=128 SYN=2048
  TIMED=(--steps 30 --warmup 10 --repeats 3) TIMED224=(--steps 15 --warmup 5 --repeats 2)
  PIPE=(--batches 40 --warmup 5 --repeats 3) BIG=(1024 2048) DEPTHS=(1 4) THREADS=(4 8 14)
  BACKEND=() TINY=() EVAL=(--chunk-epochs 20)
  VIEW_SPECS="2:24:1.2:6 4:12:0.6:3 8:6:0.3:1.5" VIEW_BUDGET=60
  PRETRAIN=(epochs=3 batch_size=512 precision=bf16 channels_last=true model.encoder=resnet18
    track.log_every=20)
  PROFILE=(--steps 10 --warmup 10) PROBE=(--size 32 --batch-size 512 --steps 60 --log-every 10
    --repeats 2 --threads 4)
fi
TRAIN=("$PY" -m fastclr.bench.train --device "$DEVICE" --src "$SRC" --data "$DATA" --synthetic "$SYN"
  --precision "$PREC" "$LAYOUT" --batch-size "$B32" --batch-size-224 "$B224" --modes model dali)
PIPELINE=("$PY" -m fastclr.bench.pipeline --device "$DEVICE" --src "$SRC" --data "$DATA" --synthetic "$SYN"
  --batch-size "$B32" "${PIPE[@]}" --loaders dali)
TTA=("$PY" -m fastclr.bench.time_to_accuracy --src "$SRC" --data "$DATA")

# --- running and packing ------------------------------------------------------------------------------
LIMIT=${LIMIT:-0}
SLACK=1  # the dry run's limits: a shared 2-core CPU takes longer than the GPU host for its tiny sizes
[ "$mode" = dry ] && SLACK=4
PACKING=15  # seconds kept at the end of LIMIT to pack and print
failed=() done_ok=() skipped=() stage="" child=""
archive() {  # append the stage's folder to the current archive, a new one past 12 MiB
  local n=1
  while [ -f "$OUT/results-$n.tar" ] && [ "$(stat -c %s "$OUT/results-$n.tar")" -gt $((12 << 20)) ]; do
    n=$((n + 1))
  done
  tar -rf "$OUT/results-$n.tar" -C "$WORK" "$1"
}
budget() {  # SECONDS: a command's timeout (the dry run's x SLACK), cut to what LIMIT leaves
  local cap=$(($1 * SLACK))
  if [ "$LIMIT" -gt 0 ]; then
    local left=$((LIMIT - (SECONDS - START) - PACKING))
    [ "$left" -lt "$cap" ] && cap=$left
  fi
  echo "$cap"
}
run() {  # NAME SECONDS COMMAND...: under timeout, output in the stage's NAME.log; a failure fails the stage
  local name=$1 limit
  limit=$(budget "$2")
  shift 2
  if [ "$limit" -lt 10 ]; then
    echo "   $name: not run, ${limit} s left of LIMIT=$LIMIT"
    [ "$stage_status" = ok ] && stage_status=skipped
    return 1
  fi
  local started=$SECONDS
  timeout -k 5 "$limit" "$@" > "$DIR/$name.log" 2>&1 &
  child=$!
  wait "$child"
  local rc=$?
  child=""
  if [ "$rc" -eq 0 ]; then
    echo "   $name: ok, $((SECONDS - started)) s"
    return 0
  fi
  [ "$rc" -eq 124 ] && echo "   $name: stopped at its ${limit} s" || echo "   $name: failed (exit $rc):"
  grep -v '^\s*$' "$DIR/$name.log" | tail -4 | cut -c1-300 | sed 's/^/      /'
  stage_status=failed
  return "$rc"
}
begin() {
  stage=$1 stage_status=ok stage_started=$SECONDS DIR=$WORK/$1
  rm -rf "$DIR" && mkdir -p "$DIR"
  echo "== $stage ($(date +%T), $((SECONDS - START)) s in)"
}
finish() {  # pack the stage, then its status line and key figures into the summary
  [ -n "$stage" ] || return 0
  archive "$stage"
  case $stage_status in ok) done_ok+=("$stage") ;; skipped) skipped+=("$stage") ;; *) failed+=("$stage") ;; esac
  {
    echo "$stage: $stage_status, $((SECONDS - stage_started)) s"
    "$PY" -m fastclr.bench.summary "$DIR" 2>&1 | cut -c1-400 | sed 's/^/  /'
  } | tee -a "$OUT/figures.txt"
  stage=""
}
stopped() {  # TERM or INT (the call's own limit): keep what the stage wrote, then the summary
  [ -n "$child" ] && kill "$child" 2>/dev/null
  stage_status="stopped by a signal"
  finish
  report
  exit 1
}
trap stopped TERM INT
report() {
  {
    echo "fastclr gpu.sh $mode, commit $FASTCLR_COMMIT, $DEVICE ${GPU_NAME:-}: ${#done_ok[@]} ok," \
      "${#failed[@]} failed${failed[*]:+ (${failed[*]})}, ${#skipped[@]} skipped${skipped[*]:+ (${skipped[*]})};" \
      "$((SECONDS - START)) s"
    cat "$OUT/figures.txt" 2>/dev/null
  } > "$OUT/summary.txt"
  rm -f "$OUT/figures.txt"
  echo "== summary"
  cat "$OUT/summary.txt"
}

# --- set-up: versions, and the shards the stages read (made once per machine) --------------------------
begin setup
{
  "$PY" -c "import importlib.metadata as m, nvidia.dali, omegaconf, webdataset, torch
print('dali', nvidia.dali.__version__, 'torch', torch.__version__, 'timm', m.version('timm'),
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  echo "commit $FASTCLR_COMMIT; $(nproc) cores; stages: $stages; LIMIT=$LIMIT"
} > "$DIR/versions.txt" 2>&1 || { cat "$DIR/versions.txt"; finish; report; exit 1; }
GPU_NAME=$(head -1 "$DIR/versions.txt" | sed 's/.*timm [^ ]* //')
[ "$mode" = gpu ] && nvidia-smi > "$DIR/nvidia-smi.txt" 2>&1
if [[ " $stages " =~ \ (accuracy|levers|pretrain|pipeline|compile|views|batch|prefetch|profile)\  ]]; then
  # CIFAR-10 train as JPEG and raw, its test split raw, the 224 px synthetic set: what the stages read
  run shard-sets 150 "$PY" -m fastclr.bench.shard_sets --src "$SRC" --data "$DATA" --synthetic "$SYN" \
    --json "$DIR/shard-sets.json"
fi
finish

for name in $stages; do
  begin "$name"
  case $name in
  tests)
    mapfile -t files < <(grep -l 'mark.gpu' tests/test_*.py)
    run pytest-gpu 120 "$PY" -m pytest -q -m "gpu and not slow" "${files[@]}" -p no:cacheprovider --durations=8 ;;
  accuracy)  # one start and shards once; then 100 x ~2.2 s of training and 5 x ~15 s of chunk start + evaluation
    acc=${ACC:-sgd} overrides=(data.augment_device=gpu data.num_threads=4)
    [ "$acc" = lars ] && overrides+=(optim.name=lars optim.lr=0.4 optim.weight_decay=1.0e-5 optim.warmup_epochs=10)
    limit=$(budget 400)  # training stops starting chunks where one more would pass the stage's time
    run "accuracy-$acc" $((limit / SLACK)) "${TTA[@]}" --config launch/configs/anchor_simclr_cifar10_100ep.yaml \
      --run-dir "$RUNS/acc-$acc" --project-epochs 1000 --budget-seconds $((limit > 130 ? limit - 130 : 1)) \
      "${EVAL[@]}" "${overrides[@]}" ${TINY[@]+"${TINY[@]}"} \
      --json "$DIR/accuracy-$acc.json" --plot "$DIR/accuracy-$acc.png"
    cp "$RUNS/acc-$acc/time_to_accuracy.json" "$DIR/accuracy-$acc-curve.json" 2>/dev/null  # kept when cut
    cp "$RUNS/acc-$acc/metrics.jsonl" "$DIR/accuracy-$acc-metrics.jsonl" 2>/dev/null ;;
  levers)
    run train-levers-32 150 "${TRAIN[@]}" --datasets cifar10-raw --models "$ENC" "${TIMED[@]}" \
      --optimizers lars_timm lars --augment-devices gpu cpu --graphs off on --json "$DIR/train-levers-32.json"
    run train-levers-224 60 "${TRAIN[@]}" --datasets synthetic224-jpeg --models "$ENC224" "${TIMED224[@]}" \
      --augment-devices gpu cpu --json "$DIR/train-levers-224.json" ;;
  pretrain)  # beside the levers row of the same settings (this call's, or an earlier call's on this machine)
    bench=$WORK/levers/train-levers-32.json
    [ -f "$bench" ] || { echo "   no levers figures on this machine yet: run the levers stage first"; stage_status=failed; }
    for graphs in false true; do
      [ -f "$bench" ] || break
      run_dir=$RUNS/pretrain-graphs-$graphs
      rm -rf "$run_dir"
      run "pretrain-graphs-$graphs" 45 "$PY" -m fastclr pretrain data.train="$DATA/cifar10-raw" run_dir="$run_dir" \
        model.cifar_stem=true optim.name=lars optim.lr=0.3 optim.warmup_epochs=1 track.progress=false \
        data.augment_device=auto cuda_graphs=$graphs "${PRETRAIN[@]}" &&
        cp "$run_dir/metrics.jsonl" "$DIR/pretrain-graphs-$graphs-metrics.jsonl" &&
        run "speed-graphs-$graphs" 30 "$PY" -m fastclr.bench.pretrain_speed --run-dir "$run_dir" --bench "$bench" \
          --json "$DIR/pretrain-graphs-$graphs-vs-bench.json"  # the row of the run's own settings
    done ;;
  pipeline)
    run pipeline-32 45 "${PIPELINE[@]}" --only cifar10-raw cifar10-jpeg --augment-devices gpu cpu \
      --json "$DIR/pipeline-32.json" ;;
  compile)
    run "train-compile-32-${COMPILE_MODE:-default}" 280 "${TRAIN[@]}" --datasets cifar10-raw --models "$ENC" \
      "${TIMED[@]}" --compile "${COMPILE_MODE:-default}" ${BACKEND[@]+"${BACKEND[@]}"} \
      --json "$DIR/train-compile-32-${COMPILE_MODE:-default}.json"
    run pytest-gpu-compile 120 "$PY" -m pytest -q -m "gpu and slow" tests/test_compile_graphs.py -p no:cacheprovider ;;
  views)  # equal compute: V views x epochs = 48 (the dry run's: a step or two each)
    for spec in $VIEW_SPECS; do
      IFS=: read -r v epochs warmup chunk <<< "$spec"
      run "views-$v" 150 "${TTA[@]}" --config launch/configs/simclr_cifar10_resnet18.yaml --run-dir "$RUNS/views-$v" \
        --budget-seconds "$VIEW_BUDGET" "${EVAL[@]}" --chunk-epochs "$chunk" data.num_threads=4 \
        ${TINY[@]+"${TINY[@]}"} data.views="$v" epochs="$epochs" optim.warmup_epochs="$warmup" \
        --json "$DIR/views-$v.json" --plot "$DIR/views-$v.png"
      cp "$RUNS/views-$v/time_to_accuracy.json" "$DIR/views-$v-curve.json" 2>/dev/null
    done ;;
  batch)
    run train-batch-32 150 "${TRAIN[@]}" --datasets cifar10-raw --models "$ENC" "${TIMED[@]}" \
      --batch-size "${BIG[@]}" --augment-devices cpu --graphs off on --json "$DIR/train-batch-32.json" ;;
  prefetch)
    run train-prefetch-32 120 "${TRAIN[@]}" --datasets cifar10-raw --models "$ENC" "${TIMED[@]}" \
      --prefetch "${DEPTHS[@]}" --augment-devices gpu cpu --json "$DIR/train-prefetch-32.json"
    run pipeline-threads-32 60 "${PIPELINE[@]}" --only cifar10-raw --augment-devices cpu --threads "${THREADS[@]}" \
      --json "$DIR/pipeline-threads-32.json" ;;
  profile)
    for ops in gpu cpu; do
      trace=()
      [ "$ops" = gpu ] && trace=(--trace "$DIR/profile-32-gpu-trace.json")
      run "profile-32-$ops" 40 "$PY" -m fastclr.bench.profile --device "$DEVICE" --src "$SRC" --data "$DATA" \
        --synthetic "$SYN" --precision "$PREC" "$LAYOUT" --batch-size "$B32" --model "$ENC" "${PROFILE[@]}" \
        --augment-device "$ops" ${trace[@]+"${trace[@]}"} --json "$DIR/profile-32-$ops.json"
    done
    gzip -f "$DIR/profile-32-gpu-trace.json" 2>/dev/null
    [ -f "$DIR/profile-32-gpu-trace.json.gz" ] && [ "$(stat -c %s "$DIR/profile-32-gpu-trace.json.gz")" -gt $((8 << 20)) ] \
      && rm "$DIR/profile-32-gpu-trace.json.gz" && echo "   the trace passed 8 MiB: left out" ;;
  probe)
    run probe-32 150 "$PY" -m fastclr.bench.probe --device "$DEVICE" "${PROBE[@]}" --json "$DIR/probe-32.json" ;;
  *)
    echo "   unknown stage $name (tests accuracy levers pretrain pipeline compile views batch prefetch profile probe)"
    stage_status=failed ;;
  esac
  finish
done
report
[ ${#failed[@]} -eq 0 ]
