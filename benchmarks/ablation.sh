#!/usr/bin/env bash
# Ablation of the competition techniques at ONE fixed budget per row.
#
# Every row trains the same model on the same fixed, stratified subset of
# training persons (data.max_persons) for the same number of epochs, then is
# scored on the full labelled eval set. It renders no data: data/maskfaces
# must exist. Prints one line per row (macro F1, >=60 F1, wall time) and a
# table at the end; everything lands in $PROJECT.
#
#   benchmarks/ablation.sh                       # all rows, ~4 min each on 2 cores (k-fold ~3x)
#   ROWS="baseline tta_flip" benchmarks/ablation.sh
#   PERSONS=600 EPOCHS=4 benchmarks/ablation.sh  # a bigger budget
#
# Smoke test on the demo data (seconds per row):
#   ROOT=data/demo PERSONS=20 EPOCHS=1 \
#   EXTRA="train.max_batches=2 data.decode_size=[64,48] data.image_size=[64,48]" benchmarks/ablation.sh
#
# Rows: baseline | multi_head | halves_all | halves_old | sampler_class | sampler_person | drop_57_59 |
#       face_crop | grabcut | kfold3 | tta_flip
# tta_flip re-scores the baseline model with eval.tta=[flip] (an eval-time
# option; no training), so it needs the baseline row in the same run.
# kfold3 trains 3 models of the same per-model budget (each on 2/3 of the
# persons) and scores their soft-voting ensemble, so it takes about 3x.
set -euo pipefail
set -f  # overrides like [57,58,59] are not file patterns
cd "$(dirname "$0")/.."

ROOT=${ROOT:-data/maskfaces}
PERSONS=${PERSONS:-300}        # of 2700 training persons; 80% train, 20% validation
EPOCHS=${EPOCHS:-3}
EXTRA=${EXTRA:-}               # more key=value overrides for every row
PROJECT=${PROJECT:-runs/ablation-$(date +%Y%m%d-%H%M%S)}
ROWS=${ROWS:-"baseline multi_head halves_all halves_old sampler_class drop_57_59 kfold3 tta_flip"}
MASKCLS=${MASKCLS:-.venv/bin/maskcls}
PY=${PY:-.venv/bin/python}
ANSWERS=${ANSWERS:-$ROOT/eval/answers.csv}   # a subset CSV works too (set IMAGES)
IMAGES=${IMAGES:-$(dirname "$ANSWERS")/images}

[ -f "$ROOT/train/train.csv" ] || { echo "ablation: $ROOT/train/train.csv not found" >&2; exit 2; }
[ -f "$ANSWERS" ] || { echo "ablation: $ANSWERS not found" >&2; exit 2; }
mkdir -p "$PROJECT"
TABLE="$PROJECT/ablation.tsv"
printf "row\tmacro_f1\told_f1\ttrain_s\teval_s\ttotal_s\n" > "$TABLE"
# shellcheck disable=SC2206
# Rows add one technique to the plain baseline (one 18-way head, no sampler), as measured in BENCHMARKS.md;
# "default" is today's default config (both winners on).
BASE=(data.root="$ROOT" project="$PROJECT" data.max_persons="$PERSONS" train.epochs="$EPOCHS" model.head=single
      data.sampler=none $EXTRA)

overrides() {  # the options of one row
  case "$1" in
    baseline|kfold3|tta_flip) echo "" ;;
    multi_head)    echo "model.head=multi" ;;
    default)       echo "model.head=multi data.sampler=class" ;;
    halves_all)    echo "mix.name=halves mix.partners=all" ;;
    halves_old)    echo "mix.name=halves mix.partners=old" ;;
    sampler_class) echo "data.sampler=class" ;;
    drop_57_59)    echo "data.drop_train_ages=[57,58,59]" ;;
    sampler_person) echo "data.sampler=person" ;;
    face_crop)     echo "preprocess.face_crop=true" ;;
    grabcut)       echo "preprocess.background=grabcut" ;;
    *) echo "ablation: unknown row '$1'" >&2; exit 2 ;;
  esac
}

metric() { "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"{m['f1']:.4f}\t{m['old_f1']:.4f}\")" "$1"; }

for row in $ROWS; do
  opts=$(overrides "$row")
  run="$PROJECT/$row"
  out="$run"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  case "$row" in
    kfold3)   "$MASKCLS" kfold "${BASE[@]}" data.folds=3 name="$row" -q > "$PROJECT/$row.log" 2>&1 ;;
    tta_flip) run="$PROJECT/baseline"; out="$PROJECT/tta_flip"
              [ -d "$run/weights" ] || { echo "ablation: tta_flip needs the baseline row first" >&2; exit 2; } ;;
    *)        "$MASKCLS" train "${BASE[@]}" $opts name="$row" -q > "$PROJECT/$row.log" 2>&1 ;;
  esac
  t1=$(date +%s)
  tta=()
  [ "$row" = tta_flip ] && tta=(eval.tta=[flip])
  "$MASKCLS" evaluate "$run" "${tta[@]}" --answers "$ANSWERS" --images "$IMAGES" --out "$out" -q >> "$PROJECT/$row.log" 2>&1
  t2=$(date +%s)
  scores=$(metric "$out/eval_metrics.json")
  printf "%s\t%s\t%s\t%s\t%s\n" "$row" "$scores" $((t1 - t0)) $((t2 - t1)) $((t2 - t0)) >> "$TABLE"
  printf "%-14s macro F1 %s  >=60 F1 %s  wall %ss (train %ss, eval %ss)\n" "$row" "${scores%%$'\t'*}" \
    "${scores##*$'\t'}" $((t2 - t0)) $((t1 - t0)) $((t2 - t1))
done

echo
echo "ablation: $PERSONS persons, $EPOCHS epochs per model, root $ROOT${EXTRA:+, extra: $EXTRA}"
column -t -s $'\t' "$TABLE" 2>/dev/null || cat "$TABLE"
echo "table: $TABLE  logs: $PROJECT/<row>.log"
