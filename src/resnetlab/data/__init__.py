"""Data: official readers -> ImageSet (uint8, in memory) -> seeded split -> Loader (augment + normalize on device).

See docs/internals.md ("data") for the interfaces the engine codes against.
"""

from resnetlab.data.augment import AugmentConfig
from resnetlab.data.folder import FolderDataset, list_imagefolder, load_imagefolder, read_image, stream_imagefolder
from resnetlab.data.imageset import (
    ImageSet,
    channel_stats,
    convert_channels,
    pixel_mean,
    resize_images,
    select_classes,
    split_train_val,
)
from resnetlab.data.loader import BatchTransform, Loader, derive_seed
from resnetlab.data.mixing import MixConfig
from resnetlab.data.policies import POLICIES
from resnetlab.data.sources import default_root, first_available, is_available, load_dataset
from resnetlab.data.synthetic import write_shapes

__all__ = [
    "AugmentConfig",
    "BatchTransform",
    "FolderDataset",
    "ImageSet",
    "Loader",
    "MixConfig",
    "POLICIES",
    "channel_stats",
    "convert_channels",
    "default_root",
    "derive_seed",
    "first_available",
    "is_available",
    "list_imagefolder",
    "load_dataset",
    "load_imagefolder",
    "pixel_mean",
    "read_image",
    "resize_images",
    "select_classes",
    "split_train_val",
    "stream_imagefolder",
    "write_shapes",
]
