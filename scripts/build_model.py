"""Rebuild the packaged model from the data: ``make model`` (see configs/shipped.yaml).

1. renders maskfaces into data/maskfaces if it is absent (../shared/maskfaces/build.py, ~10 min on 2 cores);
2. trains ``configs/shipped.yaml`` (the default recipe + chin masks + realmasks, its held-out photos kept out) into runs/shipped*;
3. scores the run on the maskfaces public eval split and on ../shared/realfaces (measure only);
4. exports it at ``--precision`` (fp16: 7 MB for lite0, within the 10 MB limit) to
   src/maskcls/weights/maskcls.onnx, replacing the file (never versioned copies), and
5. writes src/maskcls/weights/MODEL_CARD.md beside it.

    python scripts/build_model.py [--precision fp16] [--run runs/shipped] [key=value ...]

``--run`` skips training and ships an existing run. Extra key=value go to ``maskcls train``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shipped.yaml"
MASKFACES = ROOT / "data" / "maskfaces"
BUILD = ROOT.parent / "shared" / "maskfaces" / "build.py"
REALFACES = ROOT.parent / "shared" / "realfaces"
WEIGHTS = ROOT / "src" / "maskcls" / "weights"


def maskcls(*args: str) -> str:
    """Run the CLI (progress on the terminal); its stdout."""
    print("$ maskcls " + " ".join(args), flush=True)
    r = subprocess.run([sys.executable, "-m", "maskcls.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    print(r.stdout, end="")
    if r.returncode:
        sys.exit(f"build_model: `maskcls {args[0]}` failed (exit {r.returncode})")
    return r.stdout


def check_config(path: Path) -> None:
    """The mixing weight must be filled in: a null weight is the placeholder, not a choice."""
    cfg = yaml.safe_load(path.read_text()) or {}
    for i, s in enumerate((cfg.get("data") or {}).get("sources") or []):
        if not isinstance(s.get("weight"), (int, float)):
            sys.exit(f"build_model: {path}: set data.sources[{i}].weight (the mixing weight chosen on held-out "
                     f"realmasks) before building the shipped model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "int8-dynamic"])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--run", help="ship this run folder instead of training one")
    ap.add_argument("--out", type=Path, default=WEIGHTS / "maskcls.onnx")
    ap.add_argument("--answers", type=Path, default=MASKFACES / "eval" / "answers.csv",
                    help="labelled eval CSV to score the run on (default: the maskfaces public eval split)")
    ap.add_argument("--mask-set", type=Path, default=REALFACES, help="real photos to measure mask accuracy on")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()

    run = args.run
    if not run:
        check_config(args.config)
        if not (MASKFACES / "train" / "train.csv").is_file():
            print(f"rendering maskfaces into {MASKFACES} (about 10 minutes on 2 cores) ...", flush=True)
            subprocess.run([sys.executable, str(BUILD), "--out", str(MASKFACES)], check=True)
        out = maskcls("train", "-c", str(args.config), "train.progress=true", *args.overrides)
        run = next(line.split()[1] for line in out.splitlines() if line.startswith("run: "))
    evaluate = ["evaluate", run, "--answers", str(args.answers), "-q"]
    if args.mask_set.is_dir():
        evaluate += ["--mask-set", str(args.mask_set)]
    maskcls(*evaluate)
    maskcls("export", run, "--precision", args.precision, "--out", str(args.out), "-q")
    from maskcls.model_card import write_shipped_card

    card = write_shipped_card(args.out.with_name("MODEL_CARD.md"), run, args.out, args.precision)
    size = args.out.stat().st_size / 1e6
    print(f"shipped model: {args.out} ({args.precision}, {size:.1f} MB); card: {card}")
    if size > 10:
        sys.exit(f"build_model: {args.out} is {size:.1f} MB, over the 10 MB limit: use --precision fp16 or int8")


if __name__ == "__main__":
    main()
