"""Data for training anytime networks: small datasets held in memory and augmented on the device,
large ImageFolder trees streamed with timm's factories."""

from .augment import cutout_mask, normalize, random_crop_flip
from .memory import InMemoryDataset, InMemoryLoader, load_image_folder
from .sources import DataSpec, calibration_split, load_cifar, load_digits, load_held_out

__all__ = [
    "DataSpec",
    "InMemoryDataset",
    "InMemoryLoader",
    "calibration_split",
    "cutout_mask",
    "load_cifar",
    "load_digits",
    "load_held_out",
    "load_image_folder",
    "normalize",
    "random_crop_flip",
]
