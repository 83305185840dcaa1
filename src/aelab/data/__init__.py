"""Data: loaders for image folders, arrays and Fashion-MNIST; splits; augmentation."""

from aelab.data.arrays import from_array
from aelab.data.augment import PRESETS, Augment, make_augment
from aelab.data.batches import to_float
from aelab.data.dataset import ImageDataset, RowIds, check_classes
from aelab.data.folder import IMAGE_EXTENSIONS, BadImageError
from aelab.data.loaders import DataSpec, load_dataset
from aelab.data.splits import (
    Splits,
    parse_class_list,
    parse_ratio,
    resolve_class,
    select_classes,
    split_dataset,
    split_indices,
)
from aelab.data.streaming import ImageFolderStream, ImageRows
from aelab.data.transforms import FIT_MODES, conform

__all__ = [
    "FIT_MODES",
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "RowIds",
    "Augment",
    "BadImageError",
    "DataSpec",
    "ImageDataset",
    "ImageFolderStream",
    "ImageRows",
    "Splits",
    "check_classes",
    "conform",
    "from_array",
    "load_dataset",
    "make_augment",
    "parse_class_list",
    "parse_ratio",
    "resolve_class",
    "select_classes",
    "split_dataset",
    "split_indices",
    "to_float",
]
