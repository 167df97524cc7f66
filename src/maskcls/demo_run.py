"""``maskcls demo``: demo data -> short training -> evaluation -> submission, on any CPU."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .config import load_config

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"


def run_demo(args: argparse.Namespace) -> int:
    from .data.demo import make_demo_data
    from .engine import fit
    from .evaluation import evaluate_run, predict_source

    t0 = time.time()
    data = Path(args.data)
    if not (data / "train" / "train.csv").is_file():
        print(f"making demo data in {data} ...")
        make_demo_data(data)
    from .model_card import DEMO_MARKER

    if not (data / DEMO_MARKER).is_file():  # demo data drawn by an older version: mark it, the model must say so
        (data / DEMO_MARKER).write_text("Drawn demo faces made by maskcls, not photos of people.\n")
    cfg = load_config(args.config or DEMO_CONFIG, [f"data.root={data}", *args.overrides])
    if args.quiet:
        cfg.train.progress = False
    result = fit(cfg)
    m, metrics_path = evaluate_run(result["run_dir"], answers=str(data / "eval" / "answers.csv"),
                                   progress=cfg.train.progress)
    from .report import write_report

    report = write_report(result["run_dir"], metrics=metrics_path)
    from .model_card import write_model_card

    write_model_card(result["run_dir"])  # now with the eval scores
    sub = predict_source([result["run_dir"]], source=str(data), progress=cfg.train.progress)
    print(f"\ndemo done in {time.time() - t0:.0f}s")
    print(f"  run folder:      {result['run_dir']}")
    print(f"  validation F1:   {result['best_f1']:.4f}")
    print(f"  eval macro F1:   {m['f1']:.4f}   (accuracy {m['accuracy']:.4f}; {metrics_path})")
    print(f"  report:          {report}")
    print(f"  submission:      {sub}")
    return 0
