"""Ablation of the generalisation options at ONE fixed budget, scored on public eval and real photos.

Each row trains the default recipe with one change on the same stratified
subset of training persons for the same number of epochs, then is scored on
the full public eval split (macro F1, age accuracy, >=60 F1, mask accuracy)
and on ../shared/realfaces (mask accuracy and per-class recall; measured only,
never tuned on). Rows run as separate ``maskcls train`` processes; with
``--parallel 2`` two rows share the 2 cores (one thread each).

    python benchmarks/generalize.py --rows base,dist,ema --seeds 42,7
    python benchmarks/generalize.py --rows default,default+halves --epochs 10   # on top of the new default
    python benchmarks/generalize.py --score runs/gen/base_s42      # score one run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# The old recipe, pinned, so rows stay comparable when defaults change; each row adds one option to it.
OLD = ["model.age_head=band", "train.ema=false", "data.augment=basic", "model.drop_path_rate=0.0",
       "eval.class_bias=false", "preprocess.frame_photos=true"]
ROWS = {
    "base": [],
    "dist": ["model.age_head=dist"],
    "ema": ["train.ema=true"],
    "droppath": ["model.drop_path_rate=0.1"],
    "real": ["data.augment=real"],
    "halves": ["mix.name=halves", "mix.partners=all"],
    "mixup": ["mix.name=mixup", "mix.alpha=0.4"],
    "bias": ["eval.class_bias=true"],
    "lite1": ["model.name=tf_efficientnet_lite1"],
    "lite2": ["model.name=tf_efficientnet_lite2"],
    "freeze": ["model.freeze_blocks=3"],
    "chin": ["data.chin_masks=0.5"],
}
NEW = ["model.age_head=dist", "train.ema=true", "data.augment=real", "model.drop_path_rate=0.1"]
REPO = Path(__file__).resolve().parents[1]


def score(run: str, root: str, realfaces: str) -> dict:
    """Public eval metrics and real-photo mask metrics of one run."""
    import torch

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    from maskcls.evaluation import evaluate_mask_set, evaluate_run

    m, _ = evaluate_run(run, answers=f"{root}/eval/answers.csv", images=None, out=None, overrides=[], progress=False)
    out = {k: round(float(m[k]), 4) for k in ("f1", "age_accuracy", "old_f1", "mask_accuracy", "gender_accuracy")}
    out["real"], _ = evaluate_mask_set(run, realfaces, progress=False)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="base,dist,ema,droppath,real,halves,mixup")
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--persons", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--root", default="data/maskfaces")
    ap.add_argument("--realfaces", default="../shared/realfaces")
    ap.add_argument("--project", default="runs/gen")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--extra", default="", help="more key=value overrides for every row (space separated)")
    ap.add_argument("--score", help="only score this run folder and print JSON")
    a = ap.parse_args()
    if a.score:
        print(json.dumps(score(a.score, a.root, a.realfaces)))
        return 0
    threads = max(1, (os.cpu_count() or 2) // a.parallel)
    jobs = []
    for seed in a.seeds.split(","):
        for row in a.rows.split(","):
            if row == "default":  # the new default recipe, spelled out
                over = NEW
            elif row.startswith("default+"):  # the new default plus a named row's option(s), or ad-hoc ones
                rest = row.split("+", 1)[1]
                over = NEW + (ROWS[rest] if rest in ROWS else rest.split("+"))
            else:
                over = OLD + (ROWS[row] if row in ROWS else row.split("+"))  # "a=1+b=2" is an ad-hoc row
            named = row in ROWS or row == "default" or row.split("+", 1)[-1] in ROWS and row.startswith("default+")
            name = f"{row.replace('+', '_') if named else 'custom' + str(len(jobs))}_s{seed}"
            jobs.append((name, [f"data.root={a.root}", f"project={a.project}", f"name={name}",
                                f"data.max_persons={a.persons}", f"train.epochs={a.epochs}", f"train.seed={seed}",
                                f"train.threads={threads}", "train.progress=false", *a.extra.split(), *over]))
    table = Path(a.project) / "generalize.jsonl"
    table.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "THREADS": str(threads)}
    running: list = []

    def finish(name, proc, t0):
        proc.wait()
        train_s = time.time() - t0
        run = Path(a.project) / name
        if proc.returncode != 0:
            print(f"{name}: training failed ({proc.returncode})", flush=True)
            return
        t1 = time.time()
        res = subprocess.run([sys.executable, __file__, "--score", str(run), "--root", a.root,
                              "--realfaces", a.realfaces], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{name}: scoring failed: {res.stderr[-500:]}", flush=True)
            return
        row = {"name": name, **json.loads(res.stdout.strip().splitlines()[-1]), "train_s": round(train_s),
               "score_s": round(time.time() - t1)}
        with table.open("a") as f:
            f.write(json.dumps(row) + "\n")
        r = row["real"]
        print(f"{name}: F1 {row['f1']:.4f} age {row['age_accuracy']:.4f} >=60 {row['old_f1']:.4f} "
              f"mask {row['mask_accuracy']:.4f} | real {r['mask_accuracy']:.4f} {r['mask_recall']} "
              f"({row['train_s']}+{row['score_s']} s)", flush=True)

    for name, over in jobs:
        while len(running) >= a.parallel:
            done = [j for j in running if j[1].poll() is not None]
            if not done:
                time.sleep(5)
                continue
            running.remove(done[0])
            finish(*done[0])
        log = open(Path(a.project) / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "maskcls.cli", "train", *over], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        running.append((name, proc, time.time()))
    for job in running:
        finish(*job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
