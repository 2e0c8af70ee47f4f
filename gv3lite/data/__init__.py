"""Data: ImageFolder roots (Imagenette, ImageNet), their datasets, class-balanced subsets and loaders.

One module per concern, bottom to top (each imports only the ones above it):

| module | owns |
| --- | --- |
| `gv3lite.data.folder` | the root on disk: `check_data_root`, `scan_split`, `list_classes`, `count_images`, `IMAGENETTE_CLASSES` |
| `gv3lite.data.download` | where the root is (`resolve_data_root`) and the opt-in `download_imagenette` |
| `gv3lite.data.subsets` | `balanced_subset`, the tuning split (`tuning_split`, `check_disjoint`) |
| `gv3lite.data.cache` | decoding (`read_image`), the uint8 cache's size (`stored_size`), `plan_data_path` |
| `gv3lite.data.dataset` | `ImageFolderDataset` and its transforms, `build_datasets`, `apply_crop_info` |
| `gv3lite.data.loader` | `BatchedTrainLoader`, `BatchedEvalLoader`, `build_loader` |

Every public name stays importable from ``gv3lite.data``.
"""
from gv3lite.data.cache import DEFAULT_CROP_PCT, HIGH_BIT_DEPTH_FULL_SCALE, plan_data_path, read_image, stored_size
from gv3lite.data.dataset import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, apply_crop_info, build_datasets
from gv3lite.data.download import download_imagenette, resolve_data_root
from gv3lite.data.folder import (HOW_TO_GET_DATA, IMAGENETTE_CLASSES, check_data_root, count_images, list_classes,
                                 scan_split)
from gv3lite.data.loader import (BatchedEvalLoader, BatchedTrainLoader, build_loader, random_resized_crop_params,
                                 resize_weights)
from gv3lite.data.subsets import TUNING_PER_CLASS, TUNING_SPLITS, balanced_subset, check_disjoint, tuning_split

__all__ = ["BatchedEvalLoader", "BatchedTrainLoader", "DEFAULT_CROP_PCT", "HIGH_BIT_DEPTH_FULL_SCALE",
           "HOW_TO_GET_DATA", "IMAGENETTE_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderDataset",
           "TUNING_PER_CLASS", "TUNING_SPLITS", "apply_crop_info", "balanced_subset", "build_datasets",
           "build_loader", "check_data_root", "check_disjoint", "count_images", "download_imagenette",
           "list_classes", "plan_data_path", "random_resized_crop_params", "read_image", "resize_weights",
           "resolve_data_root", "scan_split", "stored_size", "tuning_split"]
