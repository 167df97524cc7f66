"""Every numeric config key has one range, in ``config.BOUNDS``, read by both ``validate`` and ``maskcls cfg`` (issue 22, 7)."""
from __future__ import annotations

import typing

import pytest

from maskcls.cli import main
from maskcls.config import BOUNDS, Config, ConfigError, describe_keys, from_dict, in_bound, load_config

NUMBERS = (int, float)


def _numeric(tp) -> bool:
    """int, float, their lists and their Optionals (bool is not a number here)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list:
        return bool(args) and args[0] in NUMBERS
    if args:
        return any(_numeric(a) for a in args)
    return tp in NUMBERS


def _numeric_keys() -> list[str]:
    out = []

    def walk(obj, prefix):
        hints = typing.get_type_hints(type(obj))
        for name, tp in hints.items():
            value = getattr(obj, name)
            if hasattr(value, "__dataclass_fields__"):
                walk(value, f"{prefix}{name}.")
            elif _numeric(tp):
                out.append(prefix + name)

    walk(Config(), "")
    return out


def test_every_numeric_key_has_a_range_and_every_range_a_key():
    keys = _numeric_keys()
    assert "data.batch_size" in keys and "train.lr" in keys and "data.age_thresholds" in keys
    assert sorted(set(keys) - set(BOUNDS)) == [], "numeric keys without a range in config.BOUNDS"
    assert sorted(set(BOUNDS) - set(keys)) == [], "ranges in config.BOUNDS for keys that are gone"


def test_every_default_is_inside_its_range():
    for k in describe_keys():
        if k["range"] and k["default"] is not None:
            values = k["default"] if isinstance(k["default"], list) else [k["default"]]
            assert all(in_bound(v, k["range"]) for v in values), k


@pytest.mark.parametrize("override", ["data.batch_size=0", "data.batch_size=-4", "data.workers=-1", "train.lr=-1",
                                      "data.crop_fraction=0", "data.crop_fraction=5", "eval.batch_size=0",
                                      "train.lr=.nan", "train.lr=.inf", "data.cache_max_gb=-1",
                                      "data.image_size=[8,9999]"])
def test_values_that_cannot_work_are_refused_in_one_line(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.* is outside the range [\[(].*`maskcls cfg {key}`\)$"):
        load_config(None, [override])


def test_range_is_checked_when_a_trained_run_takes_overrides():
    """Both engines open a run through ``run.apply_overrides``: eval.batch_size=0 (ONNX took it) is refused there."""
    from maskcls.run import apply_overrides

    with pytest.raises(ConfigError, match="eval.batch_size=0 is outside"):
        apply_overrides(from_dict(Config().to_dict()), ["eval.batch_size=0"])


def test_cfg_prints_each_range_from_the_same_table(capsys):
    assert main(["cfg"]) == 0
    lines = {line.split("=")[0]: line for line in capsys.readouterr().out.splitlines() if "=" in line}
    for key, bound in BOUNDS.items():
        assert f"range: {bound}" in lines[key], key


def test_train_with_batch_size_zero_makes_no_run_folder(tmp_path, capsys, demo_root):
    """Issue 22, 7: a ZeroDivisionError and a half-made run folder."""
    code = main(["train", f"data.root={demo_root}", f"project={tmp_path / 'runs'}", "data.batch_size=0"])
    assert code == 2
    assert "data.batch_size=0 is outside the range [1, 65536]" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
