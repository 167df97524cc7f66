"""The built-in sample photos behind `make demo`: made on the spot, one drawn person per mask state."""
import numpy as np
from PIL import Image

from maskcls.data.samples import PEOPLE, make_sample_photos


def test_sample_photos_are_written_and_show_every_mask_state(tmp_path):
    paths = make_sample_photos(tmp_path / "s")
    assert [p.name for p in paths] == ["street.jpg", "portrait.jpg"] and all(p.is_file() for p in paths)
    assert Image.open(paths[0]).size == (640, 480)
    assert sorted(m for m, _, _ in PEOPLE) == [0, 1, 2]
    again = make_sample_photos(tmp_path / "t")  # deterministic: the same demo on every machine
    assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(paths[0])))
