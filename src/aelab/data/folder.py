"""Read a folder of image files into an :class:`ImageDataset`.

Layout
    ``root/<class>/*.png`` (one subfolder per class, searched recursively)
    gives a labeled dataset whose class names are the sorted subfolder names;
    ``root/*.png`` (no subfolder holding images) gives an unlabeled one.
    Hidden files and folders (names starting with ``.``) are ignored, and so
    are files whose extension is not in :data:`IMAGE_EXTENSIONS`.

Safety
    Images with more than :data:`MAX_IMAGE_PIXELS` pixels are refused from
    their header, before any decompression happens (decompression bombs).
    When the target size or channel count is not given, a first pass reads
    only the headers to choose them. Truncated files are refused whatever Pillow's global
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm.auto import tqdm

from aelab.data.dataset import ImageDataset
from aelab.data.transforms import _check_fits, _fit_geometry, _pad_or_crop
from aelab.runtime import progress_bars

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: Largest image (width x height) aelab will decode. Pillow's own warning
#: threshold: about 89 million pixels, a 9460 x 9460 image (256 MB as RGB).
#: Larger files are refused as likely decompression bombs.
MAX_IMAGE_PIXELS = 89_478_485

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Show a progress bar only when reading this many files or more.
_PROGRESS_MIN_FILES = 200
# Decode on threads only when files average this many bytes or more; for
# small files thread hand-offs cost more than the decoding they spread.
_THREADED_MIN_BYTES = 64 * 1024

T = TypeVar("T")


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and why.

    Attributes
    ----------
    path : str
        The file.
    reason : str
        Why it cannot be used.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    gray: bool


def _list_files(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder``, sorted, skipping hidden names."""
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(Path(dirpath) / name)
    else:
        for p in folder.iterdir():
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                found.append(p)
    return sorted(found)


def _discover(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files of ``root`` with their class indices and class names.

    Raises ValueError for an empty folder or a folder mixing class subfolders
    with loose images.
    """
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {d.name: _list_files(d, recursive=True) for d in subdirs}
    empty = [name for name, files in per_class.items() if not files]
    per_class = {name: files for name, files in per_class.items() if files}
    loose = _list_files(root, recursive=False)
    exts = ", ".join(IMAGE_EXTENSIONS)
    if per_class:
        if loose:
            shown = ", ".join(p.name for p in loose[:5]) + (" ..." if len(loose) > 5 else "")
            raise ValueError(
                f"{root}: has class subfolders ({', '.join(per_class)}) and also "
                f"{len(loose)} image(s) directly inside ({shown}); move those into a "
                "class subfolder, or point at a folder holding only images for unlabeled data"
            )
        if empty:
            warnings.warn(
                f"{root}: ignoring subfolder(s) with no images: {', '.join(empty)}",
                stacklevel=3,
            )
        class_names = list(per_class)
        files: list[Path] = []
        labels: list[int] = []
        for k, name in enumerate(class_names):
            files.extend(per_class[name])
            labels.extend([k] * len(per_class[name]))
        return files, labels, class_names
    if not loose:
        raise ValueError(
            f"{root}: no images found (looked for {exts} files directly inside, "
            "or in one subfolder per class)"
        )
    return loose, None, None


def _make_ids(root: Path, files: Sequence[Path]) -> list[str]:
    """File stems when they are unique, else paths relative to ``root``."""
    stems = [p.stem for p in files]
    if len(set(stems)) == len(stems):
        return stems
    return [p.relative_to(root).as_posix() for p in files]


@contextlib.contextmanager
def _refuse_truncated() -> Iterator[None]:
    # Pillow's flag is process-global; someone may have switched it on.
    # Not thread-safe against other code flipping it concurrently.
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImageError(
            path,
            f"{width}x{height} = {width * height:,} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS:,} (a possible decompression bomb); refusing to decode it. "
            "Downscale the file, or raise aelab.data.folder.MAX_IMAGE_PIXELS if you trust it",
        )


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own limit is checked right after; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not a readable image (unknown or corrupt format)") from None
    except OSError as e:
        raise BadImageError(path, f"cannot be read ({e})") from None


def _read_header(path: Path) -> _Header:
    with _open(path) as img:
        w, h = img.size
        _check_pixels(path, w, h)
        return _Header(width=w, height=h, gray=img.mode in _GRAY_MODES)


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """An ``L`` or ``RGB`` image with ``channels`` channels (alpha dropped)."""
    if img.mode in _WIDE_GRAY_MODES:
        a = np.asarray(img, dtype=np.float64)
        # 16-bit (and wider) grayscale: scale 0-65535 to 0-255; leave 8-bit-range data alone.
        if a.size and a.max() > 255:
            a = a / 257.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def _decode(path: Path, size: tuple[int, int], channels: int, fit: str) -> np.ndarray:
    """Decode ``path`` into a (channels, height, width) uint8 array of ``size``."""
    th, tw = size
    with _open(path) as img:
        w, h = img.size
        _check_pixels(path, w, h)
        nh, nw = _fit_geometry(h, w, th, tw, fit)
        if (nh, nw) != (h, w) and img.format == "JPEG":
            # Let the JPEG decoder downscale by 2/4/8 first: much faster on photos.
            img.draft(None, (nw, nh))
        try:
            img.load()  # the caller holds _refuse_truncated()
        except (OSError, SyntaxError, ValueError) as e:
            raise BadImageError(path, f"corrupt or truncated image ({e})") from None
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        out = _to_8bit(img, channels)
    if out.size != (nw, nh):
        out = out.resize((nw, nh), Image.Resampling.BILINEAR)
    arr = np.asarray(out, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr  # (H, W) -> (H, W, 1)
    chw = arr.transpose(2, 0, 1)
    if (nh, nw) == (th, tw):
        return chw
    return _pad_or_crop(torch.from_numpy(chw.copy()), th, tw).numpy()


def _map(
    fn: Callable[[T], object], items: Sequence[T], desc: str, progress: bool, threads: bool
) -> list[object]:
    """Apply ``fn`` to every item, on a thread pool when ``threads`` (Pillow releases
    the GIL while decoding, which pays off for large files only).

    A BadImageError raised by ``fn`` is returned in place of its result.
    """

    def safe(item: T) -> object:
        try:
            return fn(item)
        except BadImageError as e:
            return e

    show = progress_bars(progress and len(items) >= _PROGRESS_MIN_FILES)
    bar = {"total": len(items), "desc": desc, "unit": "img", "disable": not show}
    workers = max(1, min(8, os.cpu_count() or 1))
    if not threads or workers == 1:
        return [safe(item) for item in tqdm(items, **bar)]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(tqdm(ex.map(safe, items), **bar))


class _BadFiles:
    """Unreadable files met while loading: raised at once, or recorded and skipped."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.skipped: list[tuple[str, str]] = []

    def drop(self, results: list[object]) -> list[int]:
        """Indices of the good results; records (or raises on) the bad ones."""
        bad = [r for r in results if isinstance(r, BadImageError)]
        if bad and not self.skip:
            more = f" ({len(bad) - 1} more bad file(s) after it)" if len(bad) > 1 else ""
            raise BadImageError(
                bad[0].path,
                f"{bad[0].reason}{more}; fix or remove it, "
                "or pass skip_bad=True (--skip-bad) to skip bad files",
            )
        self.skipped.extend((e.path, e.reason) for e in bad)
        return [i for i, r in enumerate(results) if not isinstance(r, BadImageError)]


def _common_size(root: Path, heads: list[_Header]) -> tuple[int, int]:
    """The most common image size, with a warning when there are several."""
    sizes = Counter((h.height, h.width) for h in heads)
    size = sizes.most_common(1)[0][0]
    if len(sizes) > 1:
        warnings.warn(
            f"{root}: images come in {len(sizes)} sizes; resizing all to "
            f"{size[0]}x{size[1]} (the most common). To choose the size, "
            "pass image_size= to load_dataset; a command then brings them to the "
            "input size of its model (see --model)",
            stacklevel=4,
        )
    return size


def load_folder(
    root: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None,
    channels: int | None,
    fit: str,
    skip_bad: bool,
    progress: bool,
) -> ImageDataset:
    """Read an image folder (see the module docstring); trusts its validated arguments.

    Without ``image_size`` all images keep their size when they share one; mixed
    sizes are resized to the most common size, with a warning. Without
    ``channels`` the result is grayscale when every file is grayscale, else RGB.
    """
    root = Path(root)
    files, labels, class_names = _discover(root)
    bad = _BadFiles(skip_bad)
    if image_size is None or channels is None:
        # A header pass (no pixel decoding) to choose the common size and channels.
        headers = _map(_read_header, files, "scanning images", progress, threads=False)
        keep = bad.drop(headers)
        files = [files[i] for i in keep]
        heads: list[_Header] = [headers[i] for i in keep]  # type: ignore[misc]
        labels = None if labels is None else [labels[i] for i in keep]
        if not files:
            raise ValueError(f"{root}: every image was bad and skipped: {bad.skipped}")
        channels = channels or (1 if all(h.gray for h in heads) else 3)
        image_size = image_size or _common_size(root, heads)
    th, tw = image_size
    _check_fits((len(files), channels, th, tw), root)
    images = np.empty((len(files), channels, th, tw), dtype=np.uint8)

    def read_into(i: int) -> None:
        images[i] = _decode(files[i], image_size, channels, fit)

    big = sum(p.stat().st_size for p in files) / len(files) >= _THREADED_MIN_BYTES
    # Set once around the whole pass: toggling it per image would race between threads.
    with _refuse_truncated():
        decoded = _map(read_into, range(len(files)), "reading images", progress, threads=big)
    keep = bad.drop(decoded)
    if len(keep) < len(files):
        files = [files[i] for i in keep]
        images = images[keep]
        labels = None if labels is None else [labels[i] for i in keep]
    if not files:
        raise ValueError(f"{root}: every image was bad and skipped: {bad.skipped}")
    skipped = bad.skipped
    if skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in skipped)
        warnings.warn(f"skipped {len(skipped)} bad image(s):\n{listing}", stacklevel=3)

    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.tensor(labels, dtype=torch.int64),
        ids=_make_ids(root, files),
        class_names=class_names,
        skipped=skipped,
    )
