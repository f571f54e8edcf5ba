"""Data for training anytime networks: small image datasets held in memory, augmented on device."""

from .augment import normalize, random_crop_flip
from .memory import InMemoryDataset, InMemoryLoader, load_image_folder

__all__ = ["InMemoryDataset", "InMemoryLoader", "load_image_folder", "normalize", "random_crop_flip"]
