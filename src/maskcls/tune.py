"""``maskcls tune``: Optuna search over any config keys, with pruning and shared storage.

The search space is ``tune.space``: dotted config key -> ``{low, high, log}``
(float), ``{low, high, int: true}`` (int) or ``{choices: [...]}``. A trial is a
plain ``engine.fit`` of the config with the sampled values; it reports its
validation macro F1 after every epoch and a MedianPruner stops weak trials
early. The study lives in a database (``--storage``, default a sqlite file
in ``<project>/<study>/``) and is opened with ``load_if_exists``, so several
workers, even on several machines sharing a database URL, fill one study.
``--n-trials`` is the budget of the whole study, not of one worker: Optuna's
``MaxTrialsCallback`` stops a worker once finished plus running trials reach
it, and a trial that another worker's trial beat to the last slot ends before
training (see ``over_budget``), so the workers together finish exactly
``n_trials``. The best trial is exported as ``best.yaml``, a config
``maskcls train -c`` takes.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, _set, from_dict, validate
from .engine import fit
from .models import check_model_name
from .preflight import check_before_training

log = logging.getLogger("maskcls")


def check_space(space: dict, cfg: Config) -> None:
    """Fail before any training on a bad key or range, naming the key."""
    if not space:
        raise ConfigError("tune.space is empty: give dotted keys, e.g. train.lr: {low: 1e-4, high: 1e-2, log: true}")
    for key, spec in space.items():
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise ConfigError(f"tune.space.{key}: expected {{low, high[, log][, int]}} or {{choices: [...]}}, "
                              f"got {spec!r}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"tune.space.{key}.choices: expected a non-empty list")
            samples = spec["choices"]
        else:
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"tune.space.{key}: low and high must be numbers, got {spec['low']!r}, "
                                  f"{spec['high']!r}") from None
            if not low < high or (spec.get("log") and low <= 0):
                raise ConfigError(f"tune.space.{key}: need low < high (and low > 0 with log), got {low}..{high}")
            samples = [int(low), int(high)] if spec.get("int") else [low, high]
        probe = cfg.copy()
        for v in samples:
            _set(probe, key, v)  # unknown keys and bad choices fail here, with a hint
            if key == "model.name":
                check_model_name(str(v))


def suggest(trial, key: str, spec: dict) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    if spec.get("int"):
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def trial_config(cfg: Config, values: dict) -> Config:
    out = from_dict(values, cfg.copy())
    validate(out)
    return out


def _diff(values: dict, defaults: dict) -> dict:
    """The nested parts of ``values`` that differ from ``defaults``."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict) and isinstance(defaults.get(k), dict):
            sub = _diff(v, defaults[k])
            if sub:
                out[k] = sub
        elif defaults.get(k, object()) != v:
            out[k] = v
    return out


def export_best(cfg: Config, params: dict, path: Path, header: str = "") -> Path:
    """A YAML of the differences from the defaults plus every tuned value (tune section and -q left out)."""
    best = trial_config(cfg, params).to_dict()
    best.pop("tune")
    best["train"]["progress"] = True  # how the search ran (e.g. -q) is no part of the result
    values = _diff(best, Config().to_dict())
    for key, v in params.items():  # tuned values are written even where they equal a default
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    text = yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
    path.write_text((f"# {header}\n" if header else "") + text)
    return path


class BudgetSpent(Exception):
    """This trial came after the study's last slot was taken by another worker."""


def budget_states() -> tuple:
    """Trial states that use up the study's ``n_trials``: finished, pruned, and running on some worker."""
    from optuna.trial import TrialState

    return TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING


def over_budget(study, number: int, n_trials: int) -> bool:
    """Whether ``n_trials`` trials numbered below ``number`` already hold the budget.

    Trial numbers are handed out by the database one by one, so across any
    number of workers the first ``n_trials`` live trials keep their slots and
    later ones step aside; failed trials (a crashed worker, via the heartbeat)
    give their slot back.
    """
    ahead = study.get_trials(deepcopy=False, states=budget_states())
    return sum(t.number < number for t in ahead) >= n_trials


RACES = ("already exists", "locked", "UNIQUE constraint", "IntegrityError", "version_info")


def retry_race(make, what: str, attempts: int = 6):
    """``make()``, retried when workers starting together race on a fresh database (tables, version row, study)."""
    for attempt in range(attempts):
        try:
            return make()
        except Exception as e:  # noqa: BLE001 (optuna/sqlalchemy raise several types for the same race)
            if attempt == attempts - 1 or not any(r in str(e) for r in RACES):
                raise
            log.info("%s: another worker is creating it (%s); retrying", what, type(e).__name__)
            time.sleep(0.3 + 0.5 * attempt)


def open_storage(url: str):
    """Optuna RDB storage for ``url``: waits on a busy sqlite file; heartbeats free a dead worker's trial."""
    import warnings

    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: stable since 2.9
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=180)

    return retry_race(make, "study storage")


def run_tune(cfg: Config, *, n_trials: int = 20, timeout: float | None = None, storage: str | None = None,
             study: str = "maskcls") -> dict:
    """Run (or join) the study ``study`` over ``tune.space``; returns the best value, params and exported YAML.

    ``n_trials``: trials of the whole study, shared by all workers on its
    storage; ``timeout``: seconds for this worker; ``storage``: database URL
    (postgresql://... for many machines), default sqlite in ``<project>/<study>/``.
    These steer one search, not the recipe, so they are arguments (``maskcls
    tune --n-trials/--timeout/--storage/--study``), not config keys.
    """
    import optuna
    from optuna.study import MaxTrialsCallback

    if n_trials < 1:
        raise ConfigError(f"--n-trials must be 1 or more, got {n_trials}")
    space, name = cfg.tune.space, study
    check_space(space, cfg)
    check_before_training(cfg)  # device, model name, paths: before the study and its folder exist
    folder = Path(cfg.project) / name
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{folder.resolve() / 'study.db'}"
    rdb = open_storage(storage)
    study = retry_race(lambda: optuna.create_study(
        study_name=name, storage=rdb, load_if_exists=True, direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)), f"study '{name}'")
    used = len(study.get_trials(deepcopy=False, states=budget_states()))
    log.info("study %s in %s (%d of %d trials used or running)", name, storage, used, n_trials)

    def objective(trial: "optuna.Trial") -> float:
        if over_budget(study, trial.number, n_trials):
            study.stop()
            raise BudgetSpent(f"trial {trial.number}: the study's {n_trials} trials are taken by other workers")
        values = {key: suggest(trial, key, spec) for key, spec in space.items()}
        trial_cfg = trial_config(cfg, values)
        run_dir = folder / f"trial{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))

        def report(epoch: int, metrics: dict) -> None:
            if "f1" not in metrics:
                return
            trial.report(metrics["f1"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: val F1 {metrics['f1']:.4f} below the median")

        result = fit(trial_cfg, run_dir=run_dir, on_epoch=report)
        return float(result["best_f1"])

    if used < n_trials:
        study.optimize(objective, n_trials=n_trials - used, timeout=timeout, gc_after_trial=True,
                       catch=(BudgetSpent,), callbacks=[MaxTrialsCallback(n_trials, states=budget_states())])
    finished = study.get_trials(deepcopy=False, states=budget_states()[:2])
    out = {"study": name, "storage": storage, "trials": len(finished)}
    try:
        best = study.best_trial
    except ValueError:
        log.warning("no trial of study %s has finished; nothing to export", name)
        return out
    try:
        study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
    except Exception as e:  # a summary table must never fail a finished study
        log.info("trials.csv not written (%s)", e)
    path = export_best(cfg, best.params, folder / "best.yaml",
                       header=f"study {name}, trial {best.number}: val macro F1 {best.value:.4f}")
    out.update(best_value=best.value, best_params=best.params, best_trial=best.number, best_yaml=str(path),
               best_run=best.user_attrs.get("run_dir"))
    print(f"best trial {best.number}: val macro F1 {best.value:.4f}  {best.params}\n"
          f"config: {path}  (maskcls train -c {path})")
    return out
