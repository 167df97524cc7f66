"""Decoding photos into RGB uint8 arrays, whatever their mode or orientation."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..io import OneLineError

Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs early


class ImageReadError(OneLineError):
    """An image that cannot be used; ``str(e)`` is one line naming the file (even one whose name holds a line break)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_rgb(img: Image.Image) -> np.ndarray:
    """EXIF-rotate, then convert any mode (L, P, RGBA, CMYK, I;16...) to RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))  # transparent -> white, not black
        img = canvas
    elif img.mode == "I;16" or img.mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        arr = (255 * (arr - arr.min()) / max(float(np.ptp(arr)), 1.0)).astype(np.uint8)
        img = Image.fromarray(arr)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_rgb(source) -> np.ndarray:
    """Decode a path, bytes or file object into an HxWx3 uint8 RGB array."""
    name = source if isinstance(source, (str, Path)) else "<upload>"
    try:
        if isinstance(source, bytes):
            import io

            source = io.BytesIO(source)
        with Image.open(source) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        dangling = isinstance(source, (str, Path)) and os.path.islink(source)
        raise ImageReadError(name, "broken link: its target is missing" if dangling else "file not found") from None
    except PermissionError:
        raise ImageReadError(name, "cannot read it: permission denied") from None
    except IsADirectoryError:
        raise ImageReadError(name, "is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(name, f"too many pixels ({e})") from None
    except OSError as e:
        if e.errno:  # the file system said no (a symlink loop, an I/O error), not the decoder
            raise ImageReadError(name, f"cannot read it: {e.strerror}") from None
        raise ImageReadError(name, f"corrupt or truncated image ({e})") from None
    except (SyntaxError, ValueError) as e:
        raise ImageReadError(name, f"corrupt or truncated image ({e})") from None


def resize(img: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """Resize to (H, W); area filter when shrinking, the usual choice for photos."""
    h, w = int(size[0]), int(size[1])
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)
