"""Data: image lists in ImageFolder / ImageNet-val layout and the embedded digits data, with each
model's own preprocessing; fixed, resumable batching."""

from .images import (IMAGE_EXTENSIONS, ImageItem, ImageSet, build_transform, count_images, iterate_batches,
                     labelled_batches, open_images, parse_classes, parse_shard, shard_positions)

__all__ = ["IMAGE_EXTENSIONS", "ImageItem", "ImageSet", "build_transform", "count_images", "iterate_batches",
           "labelled_batches", "open_images", "parse_classes", "parse_shard", "shard_positions"]
