"""`imagefolder:PATH` data: one folder per class, optional train/ val/ test/ split folders.

Images are decoded with PIL (threads: PIL releases the GIL while decoding) to uint8 tensors of one size and
one channel count. A folder whose decoded size is over a limit is refused by the in-memory path with a message
pointing at `stream_imagefolder`, which decodes batches in DataLoader workers instead.

Layout::

    PATH/CLASS/*.png                       -> split "train" only
    PATH/train/CLASS/*.png, PATH/test/...  -> splits "train", "val", "test" (those present)
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from resnetlab.data.imageset import ImageSet, center_crop_box
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_FOLDERS = ("train", "val", "test")
DEFAULT_MAX_GB = 8.0  # in-memory limit for decoded image folders; $RESNETLAB_MAX_DATA_GB overrides it
# PIL's modes of 16-bit grey images (PNG, TIFF; older Pillow opens a 16-bit PNG as 32-bit "I"). PIL's convert("L")
# clips them at 255 instead of scaling: a 16-bit scan of values 94..65508 came out 99.4% white.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class FolderListing:
    """The image files of one split, their labels and the class names (from the train folder)."""

    folder: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]


def _class_names(folder: Path) -> list[str]:
    """The class folders of `folder`. A hidden (dot-named) folder holding images is an error naming it: it would be
    a class dropped without a word; one without images (.git, .ipynb_checkpoints) is skipped."""
    hidden = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.startswith("."))
    with_images = [d for d in hidden if _image_files(d)]
    if with_images:
        raise UserError(f"{with_images[0]} is a hidden folder (its name starts with a dot) holding images; rename it "
                        "without the dot to make it a class, or move it out of the image folder")
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise UserError(f"{folder} has no class folders; put the images in {folder}/CLASS_NAME/")
    return names


def _image_files(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted; hidden ones (macOS "._x.png" resource forks) are skipped.

    Raises:
        UserError: an image name is a broken symbolic link (its target is gone); it is named, not skipped.
    """
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    broken = [p for p in found if p.is_symlink() and not p.exists()]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise UserError(f"{broken[0]} is a broken symbolic link (to {os.readlink(broken[0])}){more}; restore its "
                        "target or remove the link")
    return sorted(p for p in found if p.is_file())


def list_imagefolder(path: str | os.PathLike, split: str = "train") -> FolderListing:
    """The files of `split` under `path`; class names always come from the train folder.

    Raises:
        UserError: missing folder or split folder, no class folders, an empty class folder, or a class in a
            val/test folder that the train folder does not have.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; check the path in imagefolder:PATH")
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if not present and split != "train":
        raise UserError(f"{root} has no {split}/ folder; arrange the images as {root}/train/CLASS/ and "
                        f"{root}/{split}/CLASS/")
    if present and split not in present:
        raise UserError(f"{root} has no {split}/ folder (it has {', '.join(s + '/' for s in present)}); add "
                        f"{root}/{split}/CLASS/")
    folder = root / split if present else root
    classes = _class_names(root / "train" if "train" in present else folder)
    files, labels = [], []
    for name in _class_names(folder):
        if name not in classes:
            raise UserError(f"{folder / name} is a class the train folder does not have; add it there or remove it")
        found = _image_files(folder / name)
        if not found:
            raise UserError(f"class folder {folder / name} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "add some or remove the folder")
        files += found
        labels += [classes.index(name)] * len(found)
    return FolderListing(folder, files, labels, classes)


def read_image(path: str | os.PathLike, *, image_size: int | None = None, channels: int = 3) -> torch.Tensor:
    """Decode one image to a uint8 (C, H, W) tensor.

    Greyscale becomes RGB by repetition, RGBA drops alpha, RGB becomes grey by ITU-R 601-2 luma (PIL's
    conversions). 16-bit grey is scaled to 8 bits (value * 255 / 65535, rounded); 16-bit RGB comes from PIL as
    8 bits already (the high byte, within 1 of the scaled value). With `image_size`, the shorter side is resized
    to it (bilinear, antialiased) and the centered square is cut out, as torchvision's Resize(size) +
    CenterCrop(size).

    Raises:
        UserError: the file is missing, truncated or not an image (the message names it).
    """
    try:
        with Image.open(path) as img:
            if img.mode in SIXTEEN_BIT_MODES:
                img = _grey16_to_8bit(img)
            img = img.convert("L" if channels == 1 else "RGB")
            if image_size is not None and img.size != (image_size, image_size):
                new_h, new_w, top, left = center_crop_box(img.height, img.width, image_size)
                img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
                img = img.crop((left, top, left + image_size, top + image_size))
            array = np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path} is not a readable image ({exc}); fix or remove it") from exc
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def _grey16_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8-bit "L": round(value * 255 / 65535), in integers (values outside 0..65535 clip)."""
    values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    return int(float(os.environ.get("RESNETLAB_MAX_DATA_GB", DEFAULT_MAX_GB)) * 2**30)


def _size_mismatch(path: Path, shape: tuple[int, ...], first: Path, first_shape: tuple[int, ...]) -> UserError:
    return UserError(f"{path} is {shape[2]}x{shape[1]} but {first} is {first_shape[2]}x{first_shape[1]}; set "
                     "data.image_size (image_size=) to resize them all to one size")


def load_imagefolder(path: str | os.PathLike, split: str = "train", *, image_size: int | None = None,
                     channels: int | None = None, max_bytes: int | None = None,
                     workers: int | None = None) -> ImageSet:
    """Decode one split of an image folder into memory.

    Args:
        path: the folder (see the module docstring for the layout).
        split: train, val or test.
        image_size: square side after resize + center crop; None = the images' own size, which must then be
            the same for all of them.
        channels: 1 or 3 (default 3).
        max_bytes: refuse to decode more than this many bytes into memory (default 8 GiB, or
            $RESNETLAB_MAX_DATA_GB); larger folders go through `stream_imagefolder`.
        workers: decoding threads (default: CPU count, at most 8).
    """
    listing = list_imagefolder(path, split)
    channels = channels or 3
    first = read_image(listing.files[0], image_size=image_size, channels=channels)
    estimate = first.numel() * len(listing.files)
    if estimate > _max_bytes(max_bytes):
        raise UserError(f"{listing.folder} decodes to {estimate / 2**30:.1f} GiB, over the in-memory limit of "
                        f"{_max_bytes(max_bytes) / 2**30:.1f} GiB; set a smaller data.image_size, raise "
                        "RESNETLAB_MAX_DATA_GB, or stream it with resnetlab.data.stream_imagefolder")
    images = torch.empty((len(listing.files), *first.shape), dtype=torch.uint8)
    images[0] = first

    def decode(i: int) -> None:
        img = read_image(listing.files[i], image_size=image_size, channels=channels)
        if img.shape != first.shape:
            raise _size_mismatch(listing.files[i], tuple(img.shape), listing.files[0], tuple(first.shape))
        images[i] = img

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(decode, range(1, len(listing.files))):
            pass  # iterating re-raises the first failure; `images` is dropped with it, nothing is kept
    log.info("%s: %d images of %s from %s", split, len(images), "x".join(map(str, first.shape)), listing.folder)
    return ImageSet(images, torch.tensor(listing.labels, dtype=torch.int64), listing.classes)


class FolderDataset(Dataset):
    """Map-style dataset over an image-folder split yielding (uint8 C x H x W, label) for `stream_imagefolder`."""

    def __init__(self, path: str | os.PathLike, split: str = "train", *, image_size: int | None = None,
                 channels: int = 3) -> None:
        self.listing = list_imagefolder(path, split)
        self.classes = self.listing.classes
        self.image_size, self.channels = image_size, channels
        self.shape = tuple(read_image(self.listing.files[0], image_size=image_size, channels=channels).shape)

    def __len__(self) -> int:
        return len(self.listing.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = read_image(self.listing.files[i], image_size=self.image_size, channels=self.channels)
        if tuple(img.shape) != self.shape:
            raise _size_mismatch(self.listing.files[i], tuple(img.shape), self.listing.files[0], self.shape)
        return img, self.listing.labels[i]


def stream_imagefolder(path: str | os.PathLike, split: str = "train", *, image_size: int | None = None,
                       channels: int = 3, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
                       num_workers: int = 2, drop_last: bool = False) -> DataLoader:
    """A DataLoader that decodes an image folder too large for memory, yielding uint8 batches.

    Each batch is (uint8 (B, C, H, W), int64 (B,)); `loader.dataset.classes` holds the class names. Feed the
    batches to the same batched augmentation and normalization as the in-memory Loader with
    `resnetlab.data.BatchTransform`::

        stream = stream_imagefolder("photos", image_size=224, seed=0)
        transform = BatchTransform(AugmentConfig(crop_padding=16, flip=True), mean=mean, std=std,
                                   image_shape=stream.dataset.shape, device="cuda")
        for epoch in range(epochs):
            for b, (images, labels) in enumerate(stream):
                x = transform(images.to("cuda", non_blocking=True), seed=seed, epoch=epoch, batch=b)
                y = labels.to("cuda")

    The order comes from a torch.Generator seeded with `seed` (a new permutation each epoch).
    """
    dataset = FolderDataset(path, split, image_size=image_size, channels=channels)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0)
