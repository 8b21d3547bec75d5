"""Image lists and preprocessing: ImageFolder / ImageNet-val layout, and the embedded digits data."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..distributed import Ranks, shard_positions
from ..errors import ConfigError, InputError
from .labels import folder_labels, imagenet_classes, parse_classes, read_class_map, read_labels_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jpe", ".gif")


def _is_image_entry(path: Path) -> bool:
    """An image by its name: a file, or a link that is not a folder (a broken or looping link is
    listed, then skipped as unreadable with the reason, never silently left out)."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        return path.is_file() or (path.is_symlink() and not path.is_dir())
    except OSError:  # e.g. a link loop on some Python versions
        return path.is_symlink()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageItem:
    """One image of the list: `file` is relative to the data root (or the index for built-in data)."""

    file: str
    label: int


@dataclass
class ImageSet:
    """A selected, ordered list of images with a way to load them."""

    root: str
    items: list[ImageItem]
    class_names: list[str]
    loader: Callable[[int], torch.Tensor]
    #: how labels were given, when not by folder names alone ({"class_map": FILE, "labels": FILE})
    label_source: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What identifies this selection (for run.json and resume checks)."""
        # file names are bytes on POSIX: undecodable ones reach us as surrogate escapes
        text = "\n".join(f"{i.file}\t{i.label}" for i in self.items)
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        return {"root": self.root, "num_images": len(self.items), "num_classes": len(self.class_names),
                "items_sha256": digest, **self.label_source}


class _ItemDataset(Dataset):
    def __init__(self, image_set: ImageSet, positions: Sequence[int]):
        self.image_set = image_set
        self.positions = list(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        pos = self.positions[i]
        try:
            return self.image_set.loader(pos), pos, None
        except Exception as exc:  # noqa: BLE001 - any unreadable image is skipped and reported
            return None, pos, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _collate(batch: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    images = [img for img, _, _ in batch if img is not None]
    positions = [pos for img, pos, _ in batch if img is not None]
    skipped = [(pos, err) for img, pos, err in batch if img is None]
    return (torch.stack(images) if images else None), positions, skipped


def iterate_batches(image_set: ImageSet, positions: Sequence[int], batch_size: int,
                    workers: int = 0) -> Iterator[tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]]:
    """Yield (images, positions, skipped) for consecutive groups of `batch_size` positions.

    Batches are fixed by position, so a resumed run forms exactly the same batches.
    Unreadable images are dropped from the batch and returned in `skipped` with the reason.
    """
    dataset = _ItemDataset(image_set, positions)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, persistent_workers=False)
    for images, pos, skipped in loader:
        for p, err in skipped:
            warnings.warn(f"skipping unreadable image {image_set.items[p].file}: {err}", stacklevel=2)
        yield images, pos, skipped


def count_images(images: ImageSet | tuple[torch.Tensor, torch.Tensor]) -> int:
    """Number of images of an ImageSet or an (images, labels) pair."""
    return len(images.items) if isinstance(images, ImageSet) else len(images[0])


def labelled_batches(images: ImageSet | tuple[torch.Tensor, torch.Tensor], batch_size: int,
                     workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches of an ImageSet (unreadable images skipped) or a tensor pair."""
    if isinstance(images, ImageSet):
        for x, pos, _ in iterate_batches(images, range(len(images.items)), batch_size, workers):
            if x is not None:
                yield x, torch.tensor([images.items[p].label for p in pos])
    else:
        x_all, y_all = images
        for i in range(0, len(x_all), batch_size):
            yield x_all[i:i + batch_size], y_all[i:i + batch_size]


# --------------------------------------------------------------------------------------------
# opening a data argument


def open_images(data: str, preprocessing: dict[str, Any], *, preprocess: str = "model",
                classes: str | None = None, images_per_class: int | None = None,
                max_images: int | None = None, num_classes: int | None = None,
                class_names: Sequence[str] | None = None, class_map: str | None = None,
                labels: str | None = None, probe: bool = True) -> ImageSet:
    """Open `--data`: a directory of class folders, a flat directory with a `labels` file, or
    ``digits[:train|:test]``.

    Labels follow the model (`num_classes`, its `class_names`): see :func:`folder_labels`. Without
    `num_classes` the sorted class folders are labelled 0, 1, ... (the ImageFolder convention).
    `probe`: load a few images first and fail before any work when none of them can be read.
    """
    if data == "digits" or data.startswith("digits:"):
        if class_map or labels:
            raise ConfigError("does not apply to the built-in digits data", param="class_map" if class_map else "labels")
        image_set = _open_digits(data, preprocessing, preprocess)
    else:
        image_set = _open_folder(data, preprocessing, preprocess, num_classes=num_classes,
                                 class_names=class_names, class_map=class_map, labels=labels)
        image_set.label_source = {k: str(Path(v).resolve()) for k, v in
                                  (("class_map", class_map), ("labels", labels)) if v}
        if probe:
            probe_images(image_set)
    items = image_set.items
    if classes:
        wanted = set(parse_classes(classes, image_set.class_names))
        items = [it for it in items if it.label in wanted]
    if images_per_class is not None:
        if images_per_class < 1:
            raise ConfigError("must be at least 1", param="images_per_class")
        seen: dict[int, int] = {}
        kept = []
        for it in items:
            if seen.get(it.label, 0) < images_per_class:
                kept.append(it)
                seen[it.label] = seen.get(it.label, 0) + 1
        items = kept
    if max_images is not None:
        if max_images < 1:
            raise ConfigError("must be at least 1", param="max_images")
        items = items[:max_images]
    if not items:
        raise InputError(f"no images selected from {data}")
    return _reindexed(image_set, items)


def probe_images(image_set: ImageSet, count: int = 8) -> None:
    """Load up to `count` images spread over the set; raise InputError when every one fails.

    A failure that hits every image (a model whose preprocessing does not fit the files, a folder of
    broken files) is then an error before any work, not a run of skipped images.
    """
    n = len(image_set.items)
    positions = list(range(n)) if n <= count else sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
    errors = []
    for pos in positions:
        try:
            image_set.loader(pos)
            return
        except Exception as exc:  # noqa: BLE001 - reported below
            text = str(exc).splitlines()[0] if str(exc) else ""
            errors.append(f"{image_set.items[pos].file}: {type(exc).__name__}: {text}")
    raise InputError(f"{image_set.root}: none of {len(positions)} sampled images could be loaded for this model "
                     f"(first: {errors[0]})", param="data")


def subset(images: Any, positions: Sequence[int]) -> Any:
    """The images at `positions`, in that order: an ImageSet over them (loading by position in the new list)
    or, for an (images, labels) pair, the indexed pair.

    >>> x, y = subset((torch.arange(5).float(), torch.arange(5)), [3, 1])
    >>> y.tolist()
    [3, 1]
    """
    positions = [int(p) for p in positions]
    if isinstance(images, ImageSet):
        base_loader = images.loader
        return ImageSet(root=images.root, items=[images.items[p] for p in positions], class_names=images.class_names,
                        loader=lambda pos: base_loader(positions[pos]), label_source=dict(images.label_source))
    x, y = images
    index = torch.as_tensor(positions, dtype=torch.long)
    return x[index], y[index]


def _reindexed(image_set: ImageSet, items: list[ImageItem]) -> ImageSet:
    """An ImageSet over a sub-list of its items, loading by position in the new list."""
    index_of = {id(it): i for i, it in enumerate(image_set.items)}
    return subset(image_set, [index_of[id(it)] for it in items])


def _open_folder(data: str, preprocessing: dict[str, Any], preprocess: str, *, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, class_map: str | None = None,
                 labels: str | None = None) -> ImageSet:
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{data}: not a directory (expected class folders, or digits[:train|:test])", param="data")
    mapping = read_class_map(class_map) if class_map else None
    if labels is not None:  # flat layout (ImageNet val): every image in one folder, labels in a file
        files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if _is_image_entry(f))
        if not files:
            raise InputError(f"{data}: no image files", param="data")
        names = list(class_names) if class_names else (imagenet_classes(num_classes) or [])
        if mapping is not None:
            names = folder_labels(sorted(mapping), num_classes, class_map=mapping)[1]
        by_name = mapping if mapping is not None else {str(n): i for i, n in enumerate(names)}
        size = num_classes or (len(names) or None)

        def label_of(text: str) -> int:
            if text in by_name:
                return by_name[text]
            if text.lstrip("-").isdigit():
                index = int(text)
                if size is not None and not 0 <= index < size:
                    raise InputError(f"class index {index} outside the model's {size} classes")
                return index
            raise InputError(f"unknown class '{text}' (not an index, a class name or a `class_map` entry)")

        file_labels = read_labels_file(labels, files, label_of, data)
        items = [ImageItem(f, file_labels[f]) for f in files]
        size = size or (max(file_labels.values()) + 1)
        class_list = list(names) if len(names) == size else [str(i) for i in range(size)]
    else:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise InputError(f"{data}: no class folders (ImageFolder layout: DIR/<class>/<image>; for all images "
                             "in one folder give `labels` FILE)", param="data")
        index, class_list = folder_labels([d.name for d in class_dirs], num_classes, class_names, mapping, data)
        items = []
        for cdir in class_dirs:
            for f in sorted(cdir.rglob("*")):
                if _is_image_entry(f):
                    items.append(ImageItem(str(f.relative_to(root)), index[cdir.name]))
        if not items:
            raise InputError(f"{data}: no image files in its class folders", param="data")
    transform = build_transform(preprocessing, preprocess)
    mode = "L" if int(preprocessing.get("input_size", (3,))[0]) == 1 or preprocessing.get("kind") == "digits" else "RGB"

    def load(pos: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(root / items[pos].file) as img:
            return transform(to_mode(img, mode))

    return ImageSet(root=str(root), items=items, class_names=list(class_list), loader=load)


def to_mode(img: Any, mode: str) -> Any:
    """A PIL image as 8-bit `mode` ("RGB" or "L"): 16/32-bit and float images scaled, not clipped;
    palette and alpha images through RGBA."""
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            top = 65535.0
        else:
            top = 255.0
        arr = np.clip(np.round(np.nan_to_num(arr) * (255.0 / top)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # the palette's colours (and transparency) first, then drop alpha
    return img.convert(mode)


def _open_digits(data: str, preprocessing: dict[str, Any], preprocess: str) -> ImageSet:
    from .digits import digits_arrays
    from ..models.digits import load_digits_spec

    split = data.split(":", 1)[1] if ":" in data else "all"
    if split not in ("train", "test", "all"):
        raise InputError(f"{data}: the digits split is 'train' or 'test'", param="data")
    if preprocessing.get("kind") != "digits":
        raise InputError("digits needs a model trained on digits (8x8 grey images), e.g. `model` digits", param="data")
    if preprocess == "reference":
        raise ConfigError("reference is the published ImageNet pipeline; it does not apply to digits", param="preprocess")
    images, labels, indices = digits_arrays(split)
    items = [ImageItem(str(i), int(y)) for i, y in zip(indices, labels.tolist())]
    return ImageSet(root=data, items=items, class_names=list(load_digits_spec()["class_names"]),
                    loader=lambda pos: images[pos])


def build_transform(preprocessing: dict[str, Any], preprocess: str = "model") -> Callable:
    """The eval transform: the model's timm config, or the published code's (`reference`)."""
    from torchvision import transforms

    kind = preprocessing.get("kind")
    if kind == "digits":
        if preprocess == "reference":
            raise ConfigError("reference does not apply to a digits model", param="preprocess")
        # an image file stores pixel/scale in 0..255 (the model's inputs are (pixel/scale - mean)/std)
        mean, std = preprocessing["mean"], preprocessing["std"]
        return transforms.Compose([
            transforms.Resize((8, 8)),
            transforms.PILToTensor(),
            transforms.Lambda(lambda t: t.float() / 255.0),
            transforms.Normalize(mean, std),
        ])
    size = preprocessing["input_size"]
    if preprocess == "reference":
        return transforms.Compose([
            transforms.Resize((int(size[1]), int(size[2]))),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    if preprocess != "model":
        raise ConfigError(f"'{preprocess}': choose one of model, reference", param="preprocess")
    from timm.data import create_transform

    cfg = {k: v for k, v in preprocessing.items() if k != "kind"}
    cfg["input_size"] = tuple(cfg["input_size"])
    return create_transform(**cfg, is_training=False)


def shard_images(images: Any, ranks: Ranks) -> Any:
    """This rank's shard of an ImageSet or an (images, labels) pair (every W-th image from r)."""
    if not ranks.distributed:
        return images
    if isinstance(images, ImageSet):
        return _reindexed(images, [images.items[p] for p in shard_positions(len(images.items), ranks.shard)])
    x, y = images
    return x[ranks.rank::ranks.world_size], y[ranks.rank::ranks.world_size]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse `--shard I/N` (0 <= I < N)."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match:
        raise ConfigError(f"'{text}': expected I/N, e.g. 0/4", param="shard")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"'{text}': need 0 <= I < N", param="shard")
    return index, count
