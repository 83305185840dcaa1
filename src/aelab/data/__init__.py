"""Data: loaders for image folders, arrays and Fashion-MNIST; splits; augmentation."""

from aelab.data.dataset import ImageDataset

__all__ = ["ImageDataset"]
