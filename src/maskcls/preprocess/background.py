"""Background removal: the person stays, everything else becomes flat grey.

Two backends. ``grabcut`` needs nothing but OpenCV and works offline: GrabCut
seeded with the face box (sure foreground) inside a person-shaped rectangle.
``rembg`` runs a u2net-style ONNX segmentation model, through rembg's session
when rembg is installed, else directly with onnxruntime using rembg's own pre-
and post-processing (320x320 input, ImageNet normalisation, min-max mask).

The output is always 3-channel RGB of the input's size: the foreground is
composited on ``FILL``, never returned as RGBA.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..config import ConfigError, PreprocessConfig
from .faces import Box
from .learned import Lazy

log = logging.getLogger("maskcls")

FILL = (128, 128, 128)  # neutral grey: no colour cast, mid-range after normalisation
U2NET_SIZE = (320, 320)
U2NET_MEAN, U2NET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def composite(rgb: np.ndarray, alpha: np.ndarray, fill=FILL) -> np.ndarray:
    """``alpha`` (HxW in [0, 1]) of ``rgb`` over a flat ``fill`` colour, as uint8 RGB."""
    a = np.clip(alpha.astype(np.float32), 0, 1)[..., None]
    out = rgb[..., :3].astype(np.float32) * a + np.asarray(fill, np.float32) * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class GrabCut:
    """Offline foreground segmentation seeded by the face box (or the middle of the photo)."""

    def __init__(self, iterations: int = 3, side: int = 192):
        self.iterations, self.side = iterations, side

    def alpha(self, rgb: np.ndarray, face: Box | None = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.side / max(h, w))
        small = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
        mask = self.seed(small.shape, None if face is None else [v * scale for v in face])
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, self.iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error as e:  # e.g. no background sample left: keep the photo as it is
            log.debug("grabcut failed (%s); background kept", str(e).splitlines()[-1])
            return np.ones((h, w), np.float32)
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
        fg = cv2.GaussianBlur(fg, (5, 5), 0)  # soft edge instead of a jagged cut-out
        return cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)

    @staticmethod
    def seed(shape, face) -> np.ndarray:
        """GrabCut labels: a person-shaped probable foreground around the face, the face itself sure.

        Without a face the probable foreground is the middle of the portrait.
        A frame of sure background is always left so both colour models have
        samples.
        """
        h, w = shape[:2]
        mask = np.full((h, w), cv2.GC_BGD, np.uint8)
        if face is not None:
            x0, y0, x1, y1 = face
            fw, fh = x1 - x0, y1 - y0
            person = (x0 - 0.6 * fw, y0 - 0.45 * fh, x1 + 0.6 * fw, h)  # hair above, shoulders below
        else:
            person = (0.12 * w, 0.06 * h, 0.88 * w, h)
        bx, by = max(2, round(0.03 * w)), max(2, round(0.03 * h))
        px0, py0 = max(bx, int(person[0])), max(by, int(person[1]))
        px1, py1 = min(w - bx, int(person[2])), min(h, int(person[3]))
        mask[py0:py1, px0:px1] = cv2.GC_PR_FGD
        if face is not None:  # the inner face is sure foreground
            x0, y0, x1, y1 = face
            fw, fh = x1 - x0, y1 - y0
            cx0, cy0 = max(bx, int(x0 + 0.2 * fw)), max(by, int(y0 + 0.2 * fh))
            cx1, cy1 = min(w - bx, int(x1 - 0.2 * fw)), min(h, int(y1 - 0.1 * fh))
            mask[cy0:cy1, cx0:cx1] = cv2.GC_FGD
        return mask

    def __call__(self, rgb: np.ndarray, face: Box | None = None) -> np.ndarray:
        return composite(rgb, self.alpha(rgb, face))


def u2net_input(rgb: np.ndarray) -> np.ndarray:
    """rembg's ``BaseSession.normalize``: 320x320 Lanczos, /max, ImageNet mean/std, NCHW float32."""
    im = np.asarray(Image.fromarray(rgb).resize(U2NET_SIZE, Image.Resampling.LANCZOS), np.float64)
    im = im / max(float(im.max()), 1e-6)
    im = (im - U2NET_MEAN) / U2NET_STD
    return im.transpose(2, 0, 1)[None].astype(np.float32)


def u2net_mask(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """rembg's u2net post-processing: first channel, min-max to [0, 1], Lanczos back to (W, H)."""
    p = pred[:, 0, :, :].squeeze()
    p = (p - p.min()) / max(float(p.max() - p.min()), 1e-6)
    m = Image.fromarray((p.clip(0, 1) * 255).astype(np.uint8), mode="L").resize(size, Image.Resampling.LANCZOS)
    return np.asarray(m, np.float32) / 255.0


class Rembg(Lazy):
    """A u2net-style model: rembg's session if rembg is installed, else onnxruntime directly."""

    def __init__(self, model_path: str | None = None):
        self.model_path = model_path

    def _build(self):
        if importlib.util.find_spec("rembg") is not None:
            from rembg import new_session

            try:
                if self.model_path is None:
                    session = new_session("u2net")  # rembg downloads it once to ~/.u2net
                else:
                    session = new_session("u2net_custom", model_path=self.model_path)
                return lambda rgb: np.asarray(session.predict(Image.fromarray(rgb))[0], np.float32) / 255.0
            except ValueError as e:  # rembg >= 2.0.70 only loads custom models from its own folder
                if self.model_path is None:
                    raise
                log.debug("rembg refused %s (%s); running it with onnxruntime", self.model_path, e)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(rgb: np.ndarray) -> np.ndarray:
            return u2net_mask(session.run(None, {name: u2net_input(rgb)})[0], (rgb.shape[1], rgb.shape[0]))

        return run

    def alpha(self, rgb: np.ndarray, face: Box | None = None) -> np.ndarray:
        return self.model(rgb)

    def __call__(self, rgb: np.ndarray, face: Box | None = None) -> np.ndarray:
        return composite(rgb, self.alpha(rgb))


def build_remover(cfg: PreprocessConfig):
    """The backend of ``preprocess.background`` (None for "none"), checked and loaded now."""
    if cfg.background == "none":
        return None
    if cfg.background == "grabcut":
        return GrabCut()
    if cfg.background != "rembg":
        raise ConfigError(f"preprocess.background: '{cfg.background}' is not supported; choose none, grabcut, rembg")
    path = cfg.rembg_model
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(f"preprocess.rembg_model: {path}: file not found")
    if path is None and importlib.util.find_spec("rembg") is None:
        raise ConfigError('preprocess.background=rembg needs rembg (pip install ".[rembg]" in a checkout) or '
                          "preprocess.rembg_model=<a local u2net-style .onnx>; offline, use preprocess.background=grabcut")
    remover = Rembg(None if path is None else str(Path(path).expanduser()))
    try:
        remover.model  # load now: a bad model is one config error, not one error per photo
    except Exception as e:
        what = path or "rembg's u2net model (downloaded on first use)"
        raise ConfigError(f"preprocess.rembg_model: {what}: cannot be loaded ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return remover
