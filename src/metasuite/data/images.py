"""Decode image files into one uint8 array, in parallel worker processes.

Kept free of torch on purpose: worker processes are started with ``spawn`` (safe next to
torch's threads) and import only this module, pillow and numpy, so they start quickly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
from PIL import Image, UnidentifiedImageError

from metasuite.errors import DatasetError
from metasuite.progress import progress_bar

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
RESAMPLE = Image.Resampling.LANCZOS
RESAMPLE_NAME = "lanczos"
"""Part of the cache key: changing the filter changes the decoded pixels."""
CHUNK = 256


def decode_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """One image as uint8 ``[channels, height, width]``.

    Grayscale for 1 channel, RGB for 3. Omniglot's 1-bit PNGs are converted to 8-bit
    grayscale *before* resizing so that LANCZOS smooths the strokes (pillow resizes
    1-bit images with nearest neighbour, whatever filter is asked for).
    """
    try:
        with Image.open(path) as image:
            return _to_chw(image, height, width, channels)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from None


def _to_chw(image: Image.Image, height: int, width: int, channels: int) -> np.ndarray:
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), RESAMPLE)
    array = np.array(image, dtype=np.uint8)  # a writable copy
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def convert_pixels(pixels: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 images ``[n, h, w]`` (grayscale) or ``[n, h, w, 3]`` (RGB), as stored in
    class arrays and pickles, as uint8 ``[n, channels, height, width]``.

    The same conversion and filter as :func:`decode_image`, so a data set gives the same
    pixels whether it arrives as image files or as arrays; arrays already at the target
    size and channels are only reordered.
    """
    rgb = pixels.ndim == 4
    if pixels.shape[1:3] == (height, width) and (channels == 3) == rgb:
        out = pixels[:, None] if not rgb else pixels.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out, dtype=np.uint8)
    out = np.empty((len(pixels), channels, height, width), dtype=np.uint8)
    for i, image in enumerate(pixels):
        out[i] = _to_chw(Image.fromarray(np.asarray(image)), height, width, channels)
    return out


def _decode_chunk(paths: Sequence[str], height: int, width: int, channels: int) -> np.ndarray:
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = decode_image(path, height, width, channels)
    return out


def decode_images(
    paths: Sequence[str],
    height: int,
    width: int,
    channels: int,
    *,
    workers: int = 0,
    quiet: bool = False,
    desc: str = "decoding images",
) -> np.ndarray:
    """All ``paths`` as uint8 ``[len(paths), channels, height, width]``, in that order.

    ``workers`` > 1 decodes chunks in that many processes (capped at the CPU count);
    the result does not depend on the number of workers.
    """
    out = np.empty((len(paths), channels, height, width), dtype=np.uint8)
    workers = min(workers, os.cpu_count() or 1, max(1, len(paths) // CHUNK))
    starts = range(0, len(paths), CHUNK)
    with progress_bar(total=len(paths), unit="img", desc=desc, quiet=quiet) as bar:
        if workers <= 1:
            for start in starts:
                out[start : start + CHUNK] = _decode_chunk(
                    paths[start : start + CHUNK], height, width, channels
                )
                bar.update(min(CHUNK, len(paths) - start))
            return out
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            chunks = [list(paths[start : start + CHUNK]) for start in starts]
            results = pool.map(
                _decode_chunk,
                chunks,
                [height] * len(chunks),
                [width] * len(chunks),
                [channels] * len(chunks),
            )
            for start, chunk in zip(starts, results, strict=True):
                out[start : start + len(chunk)] = chunk
                bar.update(len(chunk))
    return out
