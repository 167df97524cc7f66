#!/usr/bin/env bash
# The default config on the maskfaces benchmark: train, then score the public eval split.
# Usage: bash benchmarks/maskfaces_default.sh [extra key=value overrides]
# Needs: python3 ../shared/maskfaces/build.py --out data/maskfaces
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-maskfaces_default}
mkdir -p runs/logs
# NICE="nice -n -10" (as root) keeps the timing clean while other work runs
/usr/bin/time -v ${NICE:-} .venv/bin/maskcls train data.root=data/maskfaces name=$NAME train.progress=false "$@" 2> runs/logs/$NAME.train.log | tee runs/logs/$NAME.out
RUN=$(awk '/^run:/{print $2}' runs/logs/$NAME.out | tail -1)
/usr/bin/time -v .venv/bin/maskcls evaluate "$RUN" --answers data/maskfaces/eval/answers.csv --mask-set ../shared/realfaces -q 2> runs/logs/$NAME.eval.log
.venv/bin/maskcls predict "$RUN" --source data/maskfaces -q --out "$RUN/submission.csv"
python3 ../shared/maskfaces/score.py "$RUN/submission.csv" data/maskfaces/eval/answers.csv
grep -E "Elapsed|Maximum resident" runs/logs/$NAME.train.log runs/logs/$NAME.eval.log
