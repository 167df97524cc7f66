#!/usr/bin/env bash
# CPU scaling of `maskcls train`: 1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread
# (`train.processes=2`, which starts torchrun). Same global batch (32) and steps; training images/s of the
# last epoch (with EPOCHS=2 epoch 1 warms up) from each run's log.csv.
# Usage: [EPOCHS=2 BATCHES=8] bash benchmarks/ddp_cpu_scaling.sh [DATA_ROOT] [extra key=value overrides]
# Default data: demo photos drawn by maskcls.data.demo (60 persons, 256x192), made once under runs/bench_data.
# Bounded: 3 runs x 2 epochs x 8 batches of 32 at 160x128 (tf_efficientnet_lite0), ~3-4 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${1:-runs/bench_data/demo60}
shift || true
if [ ! -d "$ROOT/train" ]; then
  $PY -c "from maskcls.data.demo import make_demo_data; make_demo_data('$ROOT', persons=60, eval_persons=6, size=(192, 256))"
fi
OUT=runs/ddp_scaling
rm -rf "$OUT"
COMMON=(data.root="$ROOT" project="$OUT" data.val_fraction=0 data.batch_size=32 train.epochs=${EPOCHS:-2} train.max_batches=${BATCHES:-8}
        train.warmup_epochs=0 train.progress=false data.loader=cpu "$@")
$PY -m maskcls.cli train -q "${COMMON[@]}" name=warm train.epochs=1 train.max_batches=1 >/dev/null  # decode cache
OMP_NUM_THREADS=1 $PY -m maskcls.cli train -q "${COMMON[@]}" name=p1t1 train.threads=1 >/dev/null
OMP_NUM_THREADS=2 $PY -m maskcls.cli train -q "${COMMON[@]}" name=p1t2 train.threads=2 >/dev/null
$PY -m maskcls.cli train -q "${COMMON[@]}" name=p2t1 train.processes=2 train.threads=1 >/dev/null
for run in p1t1 p1t2 p2t1; do
  printf "%s  last-epoch train images/s: %s\n" $run "$(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="train_images_per_s") c=i} END{print $c}' $OUT/$run/log.csv)"
done
