"""Scene speed on a video: frames per second and time per stage, ONNX engine, and how often labels flicker.

Runs ``maskcls.scenes`` on the benchmark clip (``benchmarks/make_clip.py``)
once per setting and prints, per setting: median frames/s over 1-second
windows (and overall), mean milliseconds per frame for each stage (read,
detect, classify, track, write), and the share of a tracked face's frames
whose label (mask state; all three labels) differs from its previous frame.

    python benchmarks/make_clip.py --out /tmp/scene_clip.mp4
    OMP_NUM_THREADS=2 python benchmarks/scene_speed.py runs/demo/weights/model.onnx --clip /tmp/scene_clip.mp4
    OMP_NUM_THREADS=1 python benchmarks/scene_speed.py MODEL --threads 1 --clock cpu   # on a busy machine
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

from maskcls.predict import Ensemble
from maskcls.scenes.pipeline import SceneRunner, Timer
from maskcls.scenes.sources import resolve_source
from maskcls.scenes.tracking import label_changes

SETTINGS = ["scene.every=3 scene.smooth=5", "scene.every=3 scene.smooth=1",
            "scene.every=1 scene.smooth=5", "scene.every=1 scene.smooth=1"]


def measure(model: str, clip: str, overrides: list[str], threads: int, clock: str = "wall") -> dict:
    ens = Ensemble.load([model], overrides=overrides, engine="onnx", threads=threads)
    scenes = SceneRunner(ens, video=True)  # as predict runs a video: the fast detector under auto
    # cpu: stages timed by this process's CPU time; with one thread that is each stage's work, whatever else
    # the machine runs (a shared machine's wall clock measures the neighbours)
    scenes.timer = Timer(time.process_time if clock == "cpu" else time.perf_counter)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "faces.csv")
        cpu0, t0 = time.process_time(), time.perf_counter()
        counts = scenes.stream(resolve_source(clip), out, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        table = pd.read_csv(out, keep_default_na=False)
    stages = pd.DataFrame(list(scenes.timer.frames)).fillna(0.0)
    per_frame = stages.sum(axis=1).to_numpy()
    windows = [len(w) / w.sum() for w in np.array_split(per_frame, max(1, len(per_frame) // 30)) if w.sum() > 0]
    faces = table[table["x0"] != ""]
    return {"setting": " ".join(overrides), "frames": counts["frames"], "median_fps": float(np.median(windows)),
            "overall_fps": counts["frames"] / wall, "cpu_s_per_frame": cpu / counts["frames"],
            **{f"{k}_ms": 1000 * float(stages[k].mean()) for k in stages.columns},
            "faces_per_frame": len(faces) / counts["frames"],
            "mask_flips": label_changes(faces, "mask"),
            "label_flips": label_changes(faces.assign(label=faces["mask"] + faces["gender"] + faces["age"])),
            }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an exported .onnx model (maskcls export RUN)")
    ap.add_argument("--clip", default="/tmp/scene_clip.mp4")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (MTCNN: OMP_NUM_THREADS)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="time stages by the wall clock, or by CPU time (use with --threads 1 on a busy machine)")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, help="space-separated key=value overrides per run")
    args = ap.parse_args()
    print(f"clip {args.clip}; ONNX Runtime threads {args.threads}; OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS')};"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"stage times: {args.clock} clock")
    rows = [measure(args.model, args.clip, s.split(), args.threads, args.clock) for s in args.settings]
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
