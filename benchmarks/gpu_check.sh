#!/usr/bin/env bash
# The GPU figures issue #12 asks for, in one command on a machine with one CUDA card (~8 min on an H100/H200):
#   bash benchmarks/gpu_check.sh [DATA_ROOT]      (default data/maskfaces, else demo photos drawn here)
# 1. tests of the tensor path (CPU tensors) and its eval equality on the card
# 2. model alone vs old CPU loader vs tensor path, images/s (benchmarks/gpu_input.py)
# 3. `maskcls train` end to end, data.loader=cpu vs gpu: training images/s of epoch 2, and val F1
# 4. `maskcls train` under torchrun on the one card (world size 1: the launcher path, not NCCL itself)
# Output: runs/gpu_check/summary.txt (copy the lines into BENCHMARKS.md with the card's name).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
ROOT=${1:-data/maskfaces}
OUT=runs/gpu_check
mkdir -p $OUT
SUM=$OUT/summary.txt
: > $SUM
note() { echo "$*" | tee -a $SUM; }
note "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1), $(nproc) cores"
$PY -c "import torch, timm, albumentations, optuna; assert torch.cuda.is_available(), 'no CUDA'" \
  || { note "missing packages or CUDA: pip install -e . on this machine first"; exit 1; }
if [ ! -d "$ROOT/train" ]; then
  ROOT=runs/bench_data/demo400
  [ -d "$ROOT/train" ] || $PY -c "from maskcls.data.demo import make_demo_data; make_demo_data('$ROOT', persons=400, eval_persons=10, size=(192, 256))"
  note "data: demo photos ($ROOT, 400 persons): F1 compares the paths, it is not a maskfaces score"
fi
W=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))

note "-- 1. tests"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu_pipeline.py 2>&1 | tail -1 | tee -a $SUM

note "-- 2. model alone / CPU loader / tensor path (workers=$W)"
timeout 240 $PY benchmarks/gpu_input.py --root "$ROOT" --workers $W 2>&1 | grep -E "batch|Error" | tee -a $SUM

note "-- 3. maskcls train, 3 epochs, the default recipe (data.augment=real, on both paths), eval batch 256, workers=$W"
for path in cpu gpu; do
  timeout 300 $PY -m maskcls.cli train -q data.root="$ROOT" project=$OUT name=loader_$path data.loader=$path \
    data.workers=$W eval.batch_size=256 train.epochs=3 > $OUT/loader_$path.out 2>&1
  note "data.loader=$path: $(tail -1 $OUT/loader_$path.out)"
  [ -f $OUT/loader_$path/log.csv ] && awk -F, 'NR==1{for(i=1;i<=NF;i++) c[$i]=i; print "epoch,val_f1,train_images_per_s,epoch_s"; next}
    {print $c["epoch"] "," $c["val_f1"] "," $c["train_images_per_s"] "," $c["epoch_s"]}' $OUT/loader_$path/log.csv | tee -a $SUM
done

note "-- 4. torchrun, one process on the card"
timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m maskcls.cli train -q data.root="$ROOT" \
  project=$OUT name=torchrun1 train.epochs=1 train.max_batches=20 data.workers=$W 2>&1 | tail -2 | tee -a $SUM
note "== done $(date -u)"
