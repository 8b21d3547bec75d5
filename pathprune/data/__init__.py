"""Data: image lists in ImageFolder / ImageNet-val layout and the embedded digits data, with each
model's own preprocessing; fixed, resumable batching; class labels of image folders (:mod:`.labels`)."""

from ..distributed import shard_positions
from .images import (IMAGE_EXTENSIONS, ImageItem, ImageSet, build_transform, count_images, iterate_batches,
                     labelled_batches, open_images, parse_shard)
from .labels import parse_classes

__all__ = ["IMAGE_EXTENSIONS", "ImageItem", "ImageSet", "build_transform", "count_images", "iterate_batches",
           "labelled_batches", "open_images", "parse_classes", "parse_shard", "shard_positions"]
