"""The built-in sample photos behind `make demo`: made on the spot, one face per mask state."""
import numpy as np
from PIL import Image

from maskcls.data.samples import FACE, make_sample_photos


def test_sample_photos_are_written_and_show_every_mask_state(tmp_path):
    paths = make_sample_photos(tmp_path / "s")
    assert [p.name for p in paths] == ["street.jpg", "portrait.jpg"] and all(p.is_file() for p in paths)
    street = np.asarray(Image.open(paths[0]).convert("RGB"), np.int16)
    assert street.shape == (512, 1536, 3)
    x0, y0, x1, y1 = FACE  # the masks differ where they are drawn: the mouth is covered only by the mask states 0, 1
    mouth = slice(y0 + int(0.8 * (y1 - y0)), y1), slice(x0, x1)
    bare, under_nose, worn = (street[mouth[0], k * 512 + x0:k * 512 + x1] for k in range(3))
    assert np.abs(bare - under_nose).mean() > 20 and np.abs(bare - worn).mean() > 20
    nose = slice(y0 + int(0.5 * (y1 - y0)), y0 + int(0.6 * (y1 - y0)))
    assert np.abs(street[nose, x0:x1] - street[nose, 512 + x0:512 + x1]).mean() < 5  # nose bare under the nose
    assert np.abs(street[nose, x0:x1] - street[nose, 1024 + x0:1024 + x1]).mean() > 20  # and covered when worn
    again = make_sample_photos(tmp_path / "t")  # deterministic: the same demo on every machine
    assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(paths[0])))
