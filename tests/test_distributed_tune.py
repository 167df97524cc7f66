"""Two ``maskcls tune`` workers share one SQLite study: together they finish exactly n_trials, each number once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

# A worker process: the real CLI, with engine.fit replaced by a fake that takes a moment and reports one
# epoch, so the test checks the shared budget, not training (that is test_kfold_tune's job).
WORKER = """
import glob, os, sys, time, random
import maskcls.tune as tune
from maskcls.cli import main

def fake_fit(cfg, *, run_dir, on_epoch):
    # both workers hold a running trial at once before any finishes (however slowly each process started)
    folder = os.path.dirname(os.environ["TRIAL_LOG"])
    open(os.path.join(folder, f"started-{os.getpid()}"), "a").close()
    t0 = time.time()
    while len(glob.glob(os.path.join(folder, "started-*"))) < 2 and time.time() - t0 < 180:
        time.sleep(0.05)
    random.seed(str(run_dir))
    time.sleep(random.uniform(0.05, 0.4))
    f1 = min(1.0, cfg.train.lr * 50)
    on_epoch(0, {"f1": f1})
    with open(os.environ["TRIAL_LOG"], "a") as f:
        f.write(f"{os.getpid()} {os.path.basename(run_dir)}\\n")
    return {"best_f1": f1}

tune.fit = fake_fit
sys.exit(main(sys.argv[1:]))
"""


def test_two_workers_fill_one_sqlite_study_exactly(tmp_path, monkeypatch, demo_root):
    import optuna

    n_trials = 8
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"project": str(tmp_path / "runs"), "data": {"root": str(demo_root)}, "tune": {
        "space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}}))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "TRIAL_LOG": str(tmp_path / "trials.log"), "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-c", WORKER, "tune", "-c", str(config), "-q", "--n-trials", str(n_trials),
           "--storage", storage, "--study", "shared"]
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    try:
        outputs = [w.communicate(timeout=900)[0] for w in workers]  # ~30 s normally; generous on a busy CPU
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == n_trials, [(t.number, t.state) for t in study.trials]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    rows = [line.split() for line in Path(tmp_path / "trials.log").read_text().splitlines()]
    trained = [r[1] for r in rows]
    assert len(trained) == n_trials and len(set(trained)) == n_trials  # no trial number trained twice
    assert sorted(trained) == sorted(f"trial{t.number}" for t in done)
    assert len({r[0] for r in rows}) == 2  # both workers took part
    assert (tmp_path / "runs" / "shared" / "best.yaml").is_file()

    # a third worker joining the finished study trains nothing
    import maskcls.tune as tune
    from maskcls.config import load_config

    monkeypatch.setattr(tune, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    cfg = load_config(config)
    assert tune.run_tune(cfg, storage=storage, n_trials=n_trials, study="shared")["trials"] == n_trials
    assert len(optuna.load_study(study_name="shared", storage=storage).trials) == len(study.trials)


def test_workers_racing_on_a_fresh_database_retry():
    """Two workers stamping a new SQLite file: the loser hits a UNIQUE constraint on alembic_version and retries."""
    from maskcls.tune import retry_race

    calls = []

    def make():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
        return "storage"

    assert retry_race(make, "study storage") == "storage" and len(calls) == 2
    import pytest

    with pytest.raises(ValueError, match="bad url"):  # anything else is not a race: no retry
        retry_race(lambda: (_ for _ in ()).throw(ValueError("bad url")), "study storage")
