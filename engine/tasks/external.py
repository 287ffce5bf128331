"""Slice sources for Poisson blending, including the default non-brain source of task 1.

The paper blends patches from chest X-rays (CheXpert) and retinal fundus photographs (DDR) into brain MRI for task 1.
Neither ships with this project, so the default external source is a documented deviation: greyscale images bundled
inside scikit-image's wheel (``skimage/data``), read straight from the installed package (never downloaded):

=============  ==========================================================  =============================================
image          content                                                     licence (from ``skimage.data`` docstrings)
=============  ==========================================================  =============================================
camera.png     photographer with a camera                                  CC0 (Lav Varshney)
coins.png      Greek coins from Pompeii (Brooklyn Museum)                  no known copyright restrictions
text.png       printed text, corner-detection image (Wikipedia)            public domain
brick.png      brick wall texture (CC0Textures)                            CC0
grass.png      grass texture (CC0Textures)                                 CC0
gravel.png     gravel texture (CC0Textures)                                CC0
retina.jpg     normal fundus photograph (Häggström, Wikimedia Commons)     CC0 1.0
cell.png       quantitative phase image of a cell in saline                CC0
=============  ==========================================================  =============================================

The installed ``skimage/data/README.txt`` only says the folder holds a subset of scikit-image's sample data; the
licences above are those stated in each loader's docstring (``skimage.data.camera`` etc.). ``moon.png`` and
``page.png`` are left out because no licence is stated for them. Each image is converted to greyscale float in
[0, 1], centre-cropped to a square and resized to ``size x size``; it has no foreground mask (``None``), as the
paper's external sets had none.

Any :class:`~engine.tasks.base.SliceSource` can replace it, e.g. :func:`folder_source` over a folder of PNGs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import DataError

DEFAULT_IMAGES = (
    "camera.png",
    "coins.png",
    "text.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "retina.jpg",
    "cell.png",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ArraySource:
    """A :class:`~engine.tasks.base.SliceSource` over in-memory 2-D images (and optional foreground masks)."""

    def __init__(self, images: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray | None] | None = None) -> None:
        self._images = tuple(np.asarray(image, dtype=np.float32) for image in images)
        for index, image in enumerate(self._images):
            if image.ndim != 2:
                raise DataError(f"slice source image {index} is not 2-D: shape {image.shape}")
        masks = foregrounds if foregrounds is not None else [None] * len(self._images)
        if len(masks) != len(self._images):
            raise DataError(f"slice source has {len(self._images)} images but {len(masks)} foreground masks")
        self._masks = tuple(None if m is None else np.asarray(m, dtype=bool) for m in masks)
        for index, (image, mask) in enumerate(zip(self._images, self._masks, strict=True)):
            if mask is not None and mask.shape != image.shape:
                raise DataError(f"slice source mask {index} has shape {mask.shape}, image has {image.shape}")

    def __len__(self) -> int:
        """Number of images."""
        return len(self._images)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image ``index`` and its foreground (or ``None``)."""
        return self._images[index], self._masks[index]


def to_square_grey(image: np.ndarray, size: int) -> np.ndarray:
    """Greyscale float32 in [0, 1], centre-cropped to a square and resized to ``size x size``."""
    from skimage import color, transform, util

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = color.rgba2rgb(array)
    if array.ndim == 3:
        array = color.rgb2gray(array)
    array = util.img_as_float(array)
    side = min(array.shape)
    top, left = (array.shape[0] - side) // 2, (array.shape[1] - side) // 2
    square = array[top : top + side, left : left + side]
    resized = transform.resize(square, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    low, high = resized.min(), resized.max()
    scaled = (resized - low) / (high - low) if high > low else np.zeros_like(resized)
    return scaled.astype(np.float32)


def _read_images(paths: Sequence[Path], size: int) -> ArraySource:
    from skimage import io

    images = []
    for path in paths:
        try:
            images.append(to_square_grey(io.imread(path), size))
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot be read as an image ({error})") from error
    return ArraySource(images)


@functools.lru_cache(maxsize=4)
def default_external_source(size: int = 128) -> ArraySource:
    """The bundled non-brain images (see the module docstring), as ``size x size`` greyscale slices."""
    import skimage.data

    data_dir = Path(skimage.data.__file__).parent
    paths = [data_dir / name for name in DEFAULT_IMAGES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{data_dir}: scikit-image's bundled images {missing} are missing")
    return _read_images(paths, size)


def folder_source(path: str | Path, size: int = 128) -> ArraySource:
    """Every image file directly in ``path`` (sorted by name), as ``size x size`` greyscale slices.

    Raises:
        DataError: if the folder does not exist or holds no readable image.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: blending source folder does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the blending source folder")
    return _read_images(paths, size)
