"""Image input: validation and layout normalisation, image files (IDX, NumPy, PNG/JPEG folders),
and PNG grids of images and anomaly maps.

Layouts accepted everywhere: ``(N, H, W)`` (grey), ``(N, H, W, C)`` and ``(N, C, H, W)`` with
``C`` in {1, 3}. Integer images are scaled to [0, 1] by their dtype, whatever else is in the
batch: ``uint8`` by 255, ``uint16`` by 65535, any other integer dtype (``int64``, say) holds
8-bit values 0-255 and is scaled by 255; float images must already lie in [0, 1]. (JSON, which
has no integer type, is read by value instead: an image sent as integers all within [0, 1] is
in [0, 1] already; see :mod:`anovae.streaming`, which the service uses too.) Inside
anovae an image batch is always float32 ``(N, C, H, W)``. Messages give image sizes as width x
height, as image files and viewers do (``28x30 pixels (width x height)``).

Example:
    >>> import numpy as np
    >>> X, schema = check_images(np.zeros((2, 28, 28, 3), dtype=np.uint8))
    >>> X.shape, X.dtype.name, schema.to_dict()["channels"]
    ((2, 3, 28, 28), 'float32', 3)
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import reprlib
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from anovae._text import plural
from anovae.exceptions import DataError, warn
from anovae.tabular import check_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImageSchema",
    "PNG_THREADS_MIN_VALUES",
    "check_images",
    "complexity_slope",
    "declared_size",
    "is_image_source",
    "map_colours",
    "map_names",
    "png_codec",
    "png_nats",
    "read_idx",
    "read_image_folder",
    "read_images",
    "save_grid",
    "score_images",
    "to_uint8",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_NONE = object()  # "no such value" (None may be one)
#: Smallest side the convolutional networks take (see :mod:`anovae.nets.conv`).
MIN_SIDE = 8
#: Most pixels (H x W) of an image model's images: 1024 x 1024. Fitting larger images on a
#: VAE is rarely what is wanted (resize them: anomaly detectors commonly work at 256 x 256),
#: and a model file may not declare more, so that a small hostile file cannot make the loader
#: build and run a network on gigapixel images (its probe score allocated 6 GB for 4096^2).
MAX_PIXELS = 1 << 20
#: IDX file names: ``train-images-idx3-ubyte`` (``.idx3-ubyte`` too), optionally ``.gz``.
_IDX_NAME = re.compile(r"idx\d+-ubyte(\.gz)?$")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class ImageSchema:
    """The image shape a model was fitted on (stored in saved models)."""

    channels: int
    height: int
    width: int

    @property
    def n_features(self) -> int:
        """Pixels times channels (what ``n_features_in_`` reports)."""
        return self.channels * self.height * self.width

    @property
    def names(self) -> None:
        """Images have no column names (the tabular schema's ``names``)."""
        return None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe(self) -> str:
        """``"30x28 pixels (width x height) with 1 channel"``: the wording of every message."""
        return f"{_size(self.width, self.height)} with {_channels(self.channels)}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "image", "channels": self.channels, "height": self.height,
                "width": self.width, "n_features": self.n_features, "names": None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSchema:
        return cls(int(d["channels"]), int(d["height"]), int(d["width"]))


def _size(width: int, height: int) -> str:
    """An image size as every message gives it: width x height, said so."""
    return f"{width}x{height} pixels (width x height)"


def _channels(c: int) -> str:
    return f"{c} channel{'s' if c != 1 else ''}"


def _match_schema(got: ImageSchema, schema: ImageSchema | None, what: str) -> None:
    """Raise the :class:`DataError` of images ``what`` of shape ``got`` given to a model fitted
    on ``schema`` (nothing when they match, or without a model)."""
    if schema is not None and got != schema:
        raise DataError(f"{what} holds {got.describe()}, but the model was fitted on "
                        f"{schema.describe()}; resize or convert the images first")


def _to_nchw(arr: np.ndarray, what: str) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) -> (N, C, H, W) (a view where possible)."""
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{what} must hold images as (N, H, W), (N, H, W, C) or (N, C, H, W) "
                        f"with C = 1 or 3; got shape {arr.shape}")
    first, last = arr.shape[1] in (1, 3), arr.shape[3] in (1, 3)
    if first and not last:
        return arr
    if last and not first:
        return arr.transpose(0, 3, 1, 2)
    raise DataError(f"{what} has shape {arr.shape}: cannot tell the channel axis; images need "
                    f"1 or 3 channels, first (N, C, H, W) or last (N, H, W, C), and sides >= "
                    f"{MIN_SIDE}")


def check_images(X: Any, schema: ImageSchema | None = None, *, min_rows: int = 1,
                 what: str = "X") -> tuple[np.ndarray, ImageSchema]:
    """Validate an image batch: float32 ``(N, C, H, W)`` in [0, 1] and its :class:`ImageSchema`.

    With ``schema`` (the fitted one) the size and channel count must match it. Every problem
    raises :class:`DataError` naming it (wrong shape, size or channels, NaN, values out of range).

    Integer pixels are scaled by their dtype alone, so an image scores the same in any batch:
    ``uint8`` by 255, ``uint16`` by 65535, other integer dtypes (``int64``, ``int16``...) must
    hold 8-bit values 0-255 and are scaled by 255. Floats must lie in [0, 1] and are kept.
    Integers are divided in float32 (not multiplied by ``1 / 255``), so ``uint8`` images and
    the same images as ``x.astype(np.float32) / 255`` (or float64 ``x / 255``) give
    bit-identical arrays, so the same model.
    """
    if isinstance(X, ImageData):
        raise DataError(f"{what} is what read_images returns: pass its .images (the labels are "
                        "its .labels)")
    if isinstance(X, (str, os.PathLike)):
        raise DataError(f"{what} is a path ({os.fspath(X)!r}): read the images first, "
                        "anovae.images.read_images(path).images")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists: images of different sizes
        raise DataError(f"{what} cannot be read as an image array (images of different sizes "
                        f"or channel counts?): {exc}") from exc
    odd: Any = _NONE
    if arr.dtype == object and arr.ndim >= 3:  # one shape: some values are not numbers
        odd = next((v for v in arr.flat if not isinstance(v, (int, float, np.number))
                    or (isinstance(v, int) and not -2**63 <= v < 2**64)), _NONE)
    if odd is not _NONE:  # (2**70 or None were "images of different sizes")
        raise DataError(f"{what} holds values that are not pixel numbers (e.g. "
                        f"{reprlib.repr(odd)})")
    if arr.dtype == object:
        raise DataError(f"{what} holds images of different sizes or channel counts; resize them "
                        "to one size and one channel count")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float32)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{what} must hold numeric pixel values, got dtype {arr.dtype}")
    arr = _to_nchw(arr, what)
    n, c, h, w = arr.shape
    check_size(what, arr.shape, min_rows, unit="image")
    if c not in (1, 3):
        raise DataError(f"{what} has {c} channels; images need 1 (grey) or 3 (RGB)")
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{what} holds images of {_size(w, h)}; the smallest side must be >= "
                        f"{MIN_SIDE}")
    if h * w > MAX_PIXELS:
        raise DataError(f"{what} holds images of {_size(w, h)}; anovae models images of at most "
                        f"{MAX_PIXELS:,} pixels (1024x1024): resize them first")
    got = ImageSchema(c, h, w)
    _match_schema(got, schema, what)
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint16:
            scale = 65535.0
        else:
            if arr.dtype != np.uint8:  # any other integer dtype holds 8-bit pixels
                least, most = int(arr.min()), int(arr.max())
                if least < 0 or most > 255:
                    raise DataError(f"{what} has {'negative ' if least < 0 else ''}integer "
                                    f"pixel values ({arr.dtype} in [{least}, {most}]); integer "
                                    "pixels must lie in [0, 255] (8-bit), unless the array is "
                                    "uint16 (scaled by 65535); or give floats in [0, 1]")
            scale = 255.0
        # x / 255 correctly rounded, as float input divided by the user (x * (1 / 255) is not)
        out = np.divide(arr, np.float32(scale), dtype=np.float32)
    else:
        out = arr.astype(np.float32, copy=False)
        lo, hi = float(out.min()), float(out.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int((~np.isfinite(out)).reshape(n, -1).any(1).sum())
            raise DataError(f"{what} contains NaN or infinite pixel values ({bad} images)")
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{what} has float pixel values in [{lo:.4g}, {hi:.4g}]; float "
                            "images must lie in [0, 1] (divide by 255; uint8 images are "
                            "scaled automatically)")
    return np.ascontiguousarray(out), schema or got


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` floats in [0, 1] (clipped) -> ``(N, H, W, C)`` uint8."""
    arr = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)  # (N, C, H, W)
    return np.round(arr.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


# -- image complexity (the score correction of ImageVAEDetector) -----------------------------
#: Images with at least this many values (H x W x C) are PNG-encoded on several threads (the
#: encoder releases the GIL; below this size the thread hand-off costs more than it saves).
PNG_THREADS_MIN_VALUES = 4096


def _png_bytes(image: np.ndarray) -> int:
    """Size of one ``(H, W, C)`` uint8 image as PNG (Pillow, ``optimize=True``)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG",
                                                                           optimize=True)
    return buf.getbuffer().nbytes


def png_nats(images: np.ndarray) -> np.ndarray:
    """Complexity of each image: its lossless PNG size in nats, ``(N, C, H, W)`` floats in
    [0, 1] -> ``(N,)`` float64 (8-bit pixels, Pillow's PNG encoder with ``optimize=True``).

    A generic compressor's code length measures how much there is to encode in an image (edges,
    texture, ink) whatever the class. Likelihood-based models give simple images high likelihood
    whatever they show (Serra et al., "Input complexity and out-of-distribution detection with
    likelihood-based generative models", ICLR 2020); :func:`complexity_slope` removes that
    share from a score. Deterministic for a given Pillow/zlib build (:func:`png_codec`; other
    zlib builds may differ by a few bytes). Runs on the host: about 0.13 ms for a 28x28 grey
    image and 20 ms for a 224x224 colour one on one core of a 2-core x86 VM; images of
    :data:`PNG_THREADS_MIN_VALUES` values or more are encoded on up to 8 threads (1.9x on 2
    cores at 224x224).

    >>> import numpy as np
    >>> blank, noise = np.zeros((1, 1, 28, 28)), np.random.default_rng(0).random((1, 1, 28, 28))
    >>> bool(png_nats(blank)[0] < png_nats(noise)[0])
    True
    """
    shape = np.shape(images)
    if len(shape) != 4 or shape[1] not in (1, 3) or np.asarray(images).dtype.kind != "f":
        # (Pillow's own error named a data type: "Cannot handle this data type: (1, 1, 64)")
        raise DataError(f"png_nats takes (N, C, H, W) floats in [0, 1] with C = 1 or 3, got "
                        f"shape {shape} of {np.asarray(images).dtype}: convert other layouts "
                        "and 8-bit pixels with anovae.images.check_images first")
    eight = to_uint8(images)  # (N, H, W, C)
    n = eight.shape[0]
    threads = min(8, os.cpu_count() or 1, n)
    if threads > 1 and eight[0].size >= PNG_THREADS_MIN_VALUES:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:  # map keeps the order
            sizes = list(pool.map(_png_bytes, eight))
    else:
        sizes = [_png_bytes(im) for im in eight]
    return np.asarray(sizes, dtype=np.float64) * 8.0 * np.log(2.0)  # bytes -> nats


def png_codec() -> str:
    """The PNG encoder :func:`png_nats` runs on (Pillow and zlib versions): sizes, so
    complexity-corrected scores, can differ by a few bytes between zlib builds."""
    import PIL
    from PIL import features

    return f"Pillow {PIL.__version__}, zlib {features.version('zlib')}"


def complexity_slope(scores: np.ndarray, complexity: np.ndarray) -> float:
    """Slope ``b`` of ``scores (n,)`` on ``complexity (n,)`` over normal images: the
    least-squares slope, shrunk toward 0 by its reliability.

    ``score - b * complexity`` is then the part of a score that the image's complexity does not
    explain on normal data: ``b`` is measured, not assumed (Serra et al. subtract the code
    length with ``b = 1``, which needs a model whose likelihood is as good a code as PNG; a VAE
    with a floored pixel variance is far from that, and ``b = 1`` over-corrects).

    The correction also applies to images far simpler or more complex than the fitting ones (a
    blank frame against textured normal images), where a slope that is noise moves scores a
    lot, either way: it is trusted only as far as it is measured. With ``b0`` the least-squares
    slope and ``se`` its standard error, ``b = b0 * max(0, 1 - se² / b0²)`` (``1 - 1 / t²``
    with ``t = b0 / se``): the empirical-Bayes estimate under a prior centred on 0 whose
    variance is estimated as ``b0² - se²``, i.e. ``b0`` times its reliability (the share of
    ``b0²`` that is not noise). A slope within one standard error of 0 becomes 0; a
    well-measured one is barely changed (400 MNIST images of one digit, 30 epochs: ``t`` 6 to 8
    and ``b`` 1.5-3% smaller for the digits 1, 3, 7 and 8; ``t = 2.2`` and 20% smaller for the
    0s). ``0.0`` when the complexities do not vary (one PNG size for every image, as for noise
    textures) or with fewer than 3 images (no error to measure).

    >>> round(complexity_slope(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])), 6)
    0.1
    >>> complexity_slope(np.array([5.0, 1.0, 4.0, 2.0]), np.array([10.0, 20.0, 30.0, 40.0]))
    0.0
    """
    s = np.asarray(scores, dtype=np.float64)  # (n,)
    c = np.asarray(complexity, dtype=np.float64)  # (n,)
    n = c.shape[0]
    # exact test: the centred values of n equal numbers are rounding noise, not a spread
    if n < 3 or c.max() == c.min():
        return 0.0
    dc, ds = c - c.mean(), s - s.mean()  # (n,) each
    sxx, sxy = float(dc @ dc), float(dc @ ds)
    b0 = sxy / sxx
    if b0 == 0.0:
        return 0.0
    rss = max(0.0, float(ds @ ds) - b0 * sxy)  # residual sum of squares of the fit
    se2 = rss / ((n - 2) * sxx)  # squared standard error of b0
    reliability = 1.0 - se2 / (b0 * b0)
    return b0 * reliability if reliability > 0.0 else 0.0


# -- reading image files ----------------------------------------------------------------------
@dataclass
class ImageData:
    """Images read from a file or folder.

    Attributes:
        images: ``(N, H, W)`` or ``(N, H, W, C)`` uint8 (or the array's own dtype for NumPy input).
        names: one identifier per image (file path relative to the folder, else the index).
        labels: class labels per image (sub-folder names, IDX/NumPy labels), or ``None``.
    """

    images: np.ndarray
    names: list[str]
    labels: np.ndarray | None = None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed (``.gz``) or raw.

    Raises:
        DataError: not an IDX file, or cut short.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:  # type: ignore[operator]
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r}: {exc}") from exc
    if not _idx_magic(raw):
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{str(path)!r} is not a valid IDX file (bad header)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    offset = 4 + 4 * ndim
    if len(raw) - offset < need:
        raise DataError(f"IDX file {str(path)!r} is cut short: header says {dims} but holds "
                        f"{len(raw) - offset} of {need} data bytes")
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=offset)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _is_image_file(path: Path) -> bool:
    """A PNG/JPEG file by its extension; hidden files (``.name``: macOS's AppleDouble
    ``._x.png`` beside every copied file, say) are skipped like hidden folders."""
    return (not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
            and path.is_file())


#: Image files of other formats than PNG/JPEG, which a folder read leaves out with a warning
#: (other files - a labels.csv, a README - are left out without one).
OTHER_IMAGE_EXTENSIONS = (".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic", ".heif", ".jp2",
                          ".ppm", ".pgm")


def _warn_left_out(folder: Path) -> None:
    """Warn about the images of ``folder`` (and of its class sub-folders) that are not read:
    other formats than PNG/JPEG (:data:`OTHER_IMAGE_EXTENSIONS`), and PNG/JPEG files in the
    folders of a class sub-folder, one level too deep. Hidden ones (``.name``) are skipped."""
    other: list[Path] = []
    deeper: list[Path] = []
    for top in [folder, *_class_folders(folder)]:
        for p in sorted(top.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_file() and p.suffix.lower() in OTHER_IMAGE_EXTENSIONS:
                other.append(p)
            elif p.is_dir() and top != folder:
                deeper.extend(q for q in sorted(p.iterdir()) if _is_image_file(q))
    if other:
        one = len(other) == 1
        shown = ", ".join(repr(str(p.relative_to(folder))) for p in other[:3])
        warn(f"{plural(len(other), 'image')} in {str(folder)!r} {'is' if one else 'are'} not "
             f"PNG or JPEG and left out ({shown}{', ...' if len(other) > 3 else ''}): convert "
             f"{'it' if one else 'them'} to PNG to have {'it' if one else 'them'} read")
    if deeper:
        shown = ", ".join(repr(str(p.relative_to(folder))) for p in deeper[:3])
        warn(f"{plural(len(deeper), 'image')} in {str(folder)!r} "
             f"{'lies' if len(deeper) == 1 else 'lie'} deeper than one sub-folder and "
             f"{'is' if len(deeper) == 1 else 'are'} left out ({shown}"
             f"{', ...' if len(deeper) > 3 else ''}): images are read in the folder itself, or "
             "in one sub-folder per class; move them up")


def _class_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that may hold a class (sorted; hidden ones skipped)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The image files of ``folder`` (sorted) and their class names (sub-folders) or None."""
    direct = sorted(p for p in folder.iterdir() if _is_image_file(p))
    nested = [(p, s.name) for s in _class_folders(folder) for p in sorted(s.iterdir())
              if _is_image_file(p)]
    if direct or nested:  # else the error that no image is found says where they lie
        _warn_left_out(folder)
    if direct and nested:
        raise DataError(f"{str(folder)!r} holds images both directly and in sub-folders; use "
                        "one sub-folder per class, or none")
    if nested:
        return [p for p, _ in nested], [c for _, c in nested]
    return direct, None


def declared_size(fp: BinaryIO, formats: Sequence[str] = ("PNG", "JPEG")
                  ) -> tuple[int, int] | None:
    """``(width, height)`` that the header of the image in ``fp`` declares, read without
    decoding the pixels and without Pillow's decompression-bomb check (which refuses to open
    an image of too many pixels at all, so cannot say its size); ``None`` when the header is
    not one of ``formats``. ``fp`` is left at its start.
    """
    from PIL import Image

    Image.init()
    try:
        for fmt in formats:
            opener = Image.OPEN.get(fmt.upper())
            if opener is None:
                continue
            factory, accept = opener
            fp.seek(0)
            head = fp.read(16)
            fp.seek(0)
            if accept is not None and not accept(head):
                continue
            try:
                size = factory(fp, "").size  # header only: nothing is decoded here
            except (OSError, SyntaxError, ValueError):
                continue
            return int(size[0]), int(size[1])
        return None
    finally:
        fp.seek(0)


def _too_many_pixels(fp: BinaryIO, what: str, schema: ImageSchema | None,
                     formats: Sequence[str] = ("PNG", "JPEG")) -> DataError:
    """The error for an image Pillow refuses as a decompression bomb: its declared size
    against the model's (``schema``) or, without a model, Pillow's pixel limit."""
    from PIL import Image

    size = declared_size(fp, formats)
    declared = "too many pixels" if size is None else _size(*size)
    if schema is not None:
        return DataError(f"{what} declares {declared}; the model was fitted on "
                         f"{schema.width}x{schema.height} (a decompression bomb?)")
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return DataError(f"{what} declares {declared}, over the limit of {limit} pixels per image "
                     "(a decompression bomb?); resize it")


#: The EXIF tag of an image's orientation, and its values that turn it by 90 degrees.
_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)


#: The formats whose EXIF orientation is applied: a JPEG's EXIF block is in its header (a
#: PNG's may follow the pixels, and Pillow decodes them all to find it: the size check before
#: decoding, the guard against decompression bombs, would be lost).
_ORIENTED_FORMATS = ("JPEG", "MPO")


def _orientation(im: Any) -> int:
    """A JPEG's EXIF orientation (1: as stored), read from its header, pixels not decoded."""
    if im.format not in _ORIENTED_FORMATS:
        return 1
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: the image as stored
        return 1


def oriented_size(im: Any) -> tuple[int, int]:
    """``(width, height)`` of a Pillow image as it is shown: a JPEG's EXIF orientation (a
    phone's portrait photo, stored landscape) applied, read from the header without decoding
    the pixels."""
    width, height = im.size
    return (height, width) if _orientation(im) in _QUARTER_TURNS else (width, height)


def upright(im: Any) -> Any:
    """The (loaded) image as it is shown: a JPEG's EXIF orientation applied (Pillow's
    ``exif_transpose``); the image itself for other formats, or without an orientation."""
    from PIL import ImageOps

    if _orientation(im) == 1:
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        return im


def read_image_folder(folder: str | os.PathLike, *, schema: ImageSchema | None = None
                      ) -> ImageData:
    """PNG/JPEG files of a folder, or of its sub-folders (one per class: labels = their names).
    Hidden files and folders (names starting with ``.``) are skipped.

    Grey images (modes ``1``, ``L``, ``I;16``...) give 1 channel, colour ones 3 (alpha is
    dropped); a JPEG's EXIF orientation is applied (images are read as they are shown).
    Images of other formats (``.bmp``, ``.tif``...) and images deeper than one sub-folder are
    left out with a warning. All images must have one size and one channel count; with
    ``schema`` (a fitted model's), the size the model was fitted on, checked from each file's
    header (and a JPEG's EXIF orientation) before its pixels are decoded.

    Raises:
        DataError: no images, a file that is not a readable image (or declares too many
            pixels: a decompression bomb), mixed sizes/channels, or a size other than
            ``schema``'s.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    files, classes = _image_files(folder)
    if not files:
        from anovae.io import _empty_folder_message  # says where images lie too deep

        raise DataError(_empty_folder_message(folder))
    arrays: list[np.ndarray] = []
    for p in files:
        try:
            with p.open("rb") as fh, Image.open(fh) as stored:
                shown = oriented_size(stored)
                if schema is not None and shown != (schema.width, schema.height):
                    raise DataError(f"image {str(p)!r} is {_size(*shown)}; the model was "
                                    f"fitted on {_size(schema.width, schema.height)}; resize "
                                    "the images first")
                stored.load()
                arrays.append(pixels(upright(stored)))
        except Image.DecompressionBombError:
            with p.open("rb") as fh:
                raise _too_many_pixels(fh, f"image {str(p)!r}", schema,
                                       formats=("PNG", "JPEG", *Image.ID)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"cannot read image {str(p)!r}: corrupt or not an image ({exc})"
                            ) from exc
    shapes: dict[tuple[int, ...], Path] = {}
    for p, a in zip(files, arrays, strict=True):
        shapes.setdefault(a.shape, p)
    if len(shapes) > 1:
        chans = {1 if len(s) == 2 else s[2] for s in shapes}
        examples = "; ".join(f"{_describe(s)} e.g. {str(p)!r}" for s, p in list(shapes.items())[:3])
        kind = "mixed channel counts (grey and colour)" if len(chans) > 1 else "mixed sizes"
        raise DataError(f"{str(folder)!r} holds images with {kind}: {examples}; convert them "
                        "to one size and one channel count")
    names = [str(p.relative_to(folder)) for p in files]
    labels = None if classes is None else np.asarray(classes, dtype=object)
    return ImageData(np.stack(arrays), names, labels)


def pixels(im: Any) -> np.ndarray:
    """A decoded Pillow image's pixels as anovae reads every image file: ``(H, W)`` uint8 for a
    grey one (modes ``1``, ``L``, ``LA``, ``I;16``..., a palette of greys), ``(H, W, 3)`` uint8
    for a colour one (alpha dropped). 16-bit images are scaled by their depth (a dark one is not
    an 8-bit one); 32-bit integer and float ones, which carry no range, by their values."""
    grey = im.mode in ("1", "L", "LA", "I", "I;16", "F") or (
        im.mode == "P" and _palette_is_grey(im))
    if im.mode in ("I", "I;16", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode == "I;16" or a.max() > 255 else 255.0
        return np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8)
    return np.asarray(im.convert("L" if grey else "RGB"))


def _palette_is_grey(im: Any) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _describe(shape: tuple[int, ...]) -> str:
    """An ``(H, W)`` / ``(H, W, C)`` image's shape, as :meth:`ImageSchema.describe` words it."""
    return ImageSchema(1 if len(shape) == 2 else shape[2], shape[0], shape[1]).describe()


def _idx_magic(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, uncompressed) starts with an IDX magic number."""
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES


def _is_idx(path: Path) -> bool:
    """Whether ``path`` is an IDX file: named as one (``train-images-idx3-ubyte``, optionally
    ``.gz``) or, without a table extension (``.csv``, ``.parquet``...), starting with an IDX
    magic number (gzip-compressed or raw)."""
    from anovae.io import SUPPORTED_EXTENSIONS

    name = path.name.lower()
    if _IDX_NAME.search(name):
        return True
    if name.endswith(SUPPORTED_EXTENSIONS) or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                head = fh.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return _idx_magic(head)


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` holds images where :func:`read_image_folder` looks for them."""
    return (any(_is_image_file(p) for p in folder.iterdir())
            or any(_is_image_file(q) for s in _class_folders(folder) for q in s.iterdir()))


def is_image_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds images: a folder of PNG/JPEG files (or of class sub-folders), an
    IDX file, or a ``.npy``/``.npz`` array with 3 or 4 axes.

    ``False`` for a NumPy file that cannot be read (corrupt, cut short, holding Python objects,
    never unpickled): the table reader then says what is wrong with it."""
    from anovae.io import load_numpy, npz_shape

    path = Path(path)
    if path.is_dir():
        return _has_images(path)
    if not path.is_file():
        return False
    if _is_idx(path):
        return True
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return load_numpy(path, "npy", mmap_mode="r").ndim in (3, 4)
        if suffix == ".npz":
            with load_numpy(path, "npz") as z:  # its header only: the array is read later
                shape = npz_shape(z, _npz_key(z.files, path), path)
                return shape is not None and len(shape) in (3, 4)
    except (OSError, ValueError):  # DataError too
        return False
    return False


def _npz_key(keys: Sequence[str], path: Path) -> str:
    for k in ("X", "x", "images", "arr_0"):
        if k in keys:
            return k
    if len(keys) == 1:
        return keys[0]
    raise DataError(f"{str(path)!r} holds arrays {list(keys)}; name the images 'X' or 'images'")


def read_images(path: str | os.PathLike, labels: str | os.PathLike | None = None, *,
                schema: ImageSchema | None = None) -> ImageData:
    """Read images from a folder (PNG/JPEG), an IDX file (``.gz`` or raw), ``.npy`` or ``.npz``.

    Args:
        path: the source. A ``.npz`` holds the images under ``X`` (or ``images``) and optional
            labels under ``y`` (or ``labels``).
        labels: an optional IDX or ``.npy`` file of labels (one per image).
        schema: a fitted model's :class:`ImageSchema`: the images must have its size and
            channel count (an error names ``path``; a folder's files are checked for size from
            their headers, before decoding, and named: see :func:`read_image_folder`).

    Returns:
        :class:`ImageData` (images unscaled; :func:`check_images` validates and scales them).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    y: np.ndarray | None = None
    if path.is_dir():
        data = read_image_folder(path, schema=schema)
    elif _is_idx(path):
        arr = read_idx(path)
        data = ImageData(arr, [str(i) for i in range(arr.shape[0])])
    elif path.suffix.lower() in (".npy", ".npz"):
        from anovae.io import load_numpy, npz_array

        kind = path.suffix.lower()[1:]
        try:
            if kind == "npy":
                arr = load_numpy(path, kind)
            else:
                with load_numpy(path, kind) as z:
                    arr = npz_array(z, _npz_key(z.files, path), path)
                    for k in ("y", "labels"):
                        if k in z.files:
                            y = npz_array(z, k, path)
                            break
        except (OSError, ValueError) as exc:  # a DataError of load_numpy passes as it is
            if isinstance(exc, DataError):
                raise
            raise DataError(f"cannot read {str(path)!r} as a NumPy array: {exc}") from exc
        data = ImageData(arr, [str(i) for i in range(arr.shape[0])], y)
    else:
        raise DataError(f"{str(path)!r} is not an image source: give a folder of "
                        f"{'/'.join(IMAGE_EXTENSIONS)} files, an IDX file, .npy or .npz")
    if labels is not None:
        lp = Path(labels)
        lab = read_idx(lp) if _is_idx(lp) else np.load(lp, allow_pickle=False)
        data.labels = np.asarray(lab).ravel()
    if data.labels is not None and len(data.labels) != len(data.images):
        raise DataError(f"{len(data.labels)} labels for {len(data.images)} images")
    if schema is not None:  # here the source is known: name it (check_images says "X")
        what = repr(str(path))
        _, c, h, w = _to_nchw(data.images, what).shape
        _match_schema(ImageSchema(c, h, w), schema, what)
    return data


# -- writing PNG grids ------------------------------------------------------------------------
def save_grid(images: Any, path: str | os.PathLike, *, ncol: int | None = None,
              normalize: bool = False, cmap: str | None = None, padding: int = 2,
              scale: int = 1) -> Path:
    """Write images (inputs, reconstructions, samples, anomaly maps) as one PNG grid.

    Args:
        images: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, values in [0, 1] (clipped),
            or anything when ``normalize``.
        path: the PNG file (written atomically).
        ncol: images per row (default: about ``sqrt(N)``).
        normalize: min-max scale all images together to [0, 1] first (anomaly maps).
        cmap: a matplotlib colour map for 1-channel images (e.g. ``"inferno"`` for maps).
        padding: pixels between images (white).
        scale: integer magnification (nearest neighbour).

    Returns:
        ``path``.

    >>> import numpy as np, tempfile, pathlib
    >>> p = save_grid(np.random.default_rng(0).random((6, 28, 28)),
    ...               pathlib.Path(tempfile.mkdtemp()) / "grid.png", ncol=3)
    >>> p.suffix
    '.png'
    """
    from PIL import Image

    from anovae.io import atomic_output

    arr = np.asarray(images, dtype=np.float64)
    arr = _to_nchw(arr, "images")  # (N, C, H, W)
    if normalize:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    arr = np.clip(arr, 0.0, 1.0)
    if cmap is not None and arr.shape[1] == 1:
        import matplotlib

        arr = matplotlib.colormaps[cmap](arr[:, 0])[..., :3].transpose(0, 3, 1, 2)
    n, c, h, w = arr.shape
    ncol = int(ncol or max(1, int(np.ceil(np.sqrt(n)))))
    nrow = int(np.ceil(n / ncol))
    grid = np.ones((c, nrow * (h + padding) + padding, ncol * (w + padding) + padding))
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = arr[i]
    pixels = np.round(grid * 255).astype(np.uint8)
    pixels = pixels[0] if c == 1 else pixels.transpose(1, 2, 0)  # (H, W) or (H, W, 3)
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return path


# -- scoring image files (the library side of `anovae score` on images) -----------------------
def map_colours(maps: np.ndarray, cmap: str = "inferno", lo: float | None = None,
                hi: float | None = None) -> np.ndarray:
    """``(N, H, W)`` anomaly maps -> ``(N, 3, H, W)`` RGB in [0, 1] on one shared scale.

    The scale runs from ``lo`` to ``hi`` (default: the 1st and 99.5th percentiles of all maps
    together), so colours compare across images: brighter = more anomalous.
    """
    import matplotlib

    maps = np.asarray(maps, dtype=np.float64)
    lo = float(np.percentile(maps, 1)) if lo is None else lo
    hi = float(np.percentile(maps, 99.5)) if hi is None else hi
    unit = np.clip((maps - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    return matplotlib.colormaps[cmap](unit)[..., :3].transpose(0, 3, 1, 2)


def map_names(names: Sequence[str]) -> list[str]:
    """One distinct anomaly-map file name per image name: ``<name without extension>_map.png``
    (sub-folders joined by ``__``), the extension kept where two images would share that
    (``cat.png`` and ``cat.jpg``), and a number added where even that is not enough.

    >>> map_names(["a/x.png", "cat.png", "cat.jpg"])
    ['a__x_map.png', 'cat.png_map.png', 'cat.jpg_map.png']
    """
    def flat(p: Path) -> str:
        return p.as_posix().replace("/", "__")

    stems = [flat(Path(str(n)).with_suffix("")) for n in names]
    counts = Counter(stems)
    out = [s if counts[s] == 1 else flat(Path(str(n))) for s, n in zip(stems, names, strict=True)]
    unique: list[str] = []
    used: set[str] = set()
    for name in out:
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        used.add(candidate)
        unique.append(candidate)
    return [f"{u}_map.png" for u in unique]


def score_images(detector: Any, source: str | os.PathLike, output: str | os.PathLike, *,
                 maps_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score the images of ``source`` (see :func:`read_images`) with a fitted image detector.

    Writes ``output`` (any table format of :func:`anovae.io.write_table`) with one line per
    image: ``image`` (file name, or the row number of an array's image), ``label`` (when the
    source has labels),
    ``anomaly_score`` and ``is_anomaly``; with ``maps_dir``, one PNG anomaly map per image
    (``<image>_map.png``, colours on one scale for all images: brighter = more anomalous; the
    table's ``map`` column names each image's file, see :func:`map_names`).

    Returns:
        ``{"rows", "anomalies", "seconds", "output", "maps"}``.
    """
    import time

    import pandas as pd

    from anovae.io import write_table

    t0 = time.perf_counter()
    detector._check_threshold_score()  # is_anomaly compares with threshold_: before any work
    schema = getattr(detector, "schema_", None)
    data = read_images(source, schema=schema if isinstance(schema, ImageSchema) else None)
    from_array = all(n.isdigit() for n in data.names)  # an array's images: their row numbers
    text_labels = data.labels is not None and np.asarray(data.labels).dtype.kind not in "biuf"
    if str(output).lower().endswith(".npy") and (not from_array or text_labels):
        what = "text labels (class names)" if from_array else "file names"
        raise DataError(f"a .npy output holds numbers only, but these images carry {what}: "
                        f"write {str(Path(output).with_suffix('.csv'))!r} (or .parquet, .npz) "
                        "instead")
    scores, feats = detector.score_with_feature_scores(data.images)  # (N,), (N, C, H, W)
    table = pd.DataFrame({"image": np.arange(len(data.names)) if from_array else data.names})
    if data.labels is not None:
        table["label"] = data.labels
    table["anomaly_score"] = scores
    table["is_anomaly"] = (scores > detector.threshold_).astype(np.int8)
    if maps_dir is not None:
        table["map"] = map_names(data.names)
    write_table(table, output)
    n_maps = 0
    if maps_dir is not None:
        from PIL import Image

        from anovae.io import atomic_output

        folder = Path(maps_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rgb = to_uint8(map_colours(feats.sum(axis=1)))  # (N, H, W, 3)
        for name, pixels in zip(table["map"], rgb, strict=True):
            with atomic_output(folder / name) as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")
            n_maps += 1
    return {"rows": len(scores), "anomalies": int(table["is_anomaly"].sum()),
            "seconds": time.perf_counter() - t0, "output": Path(output), "maps": n_maps}
