"""Image lists and preprocessing: ImageFolder / ImageNet-val layout, and the embedded digits data."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jpe")
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

    def describe(self) -> dict[str, Any]:
        """What identifies this selection (for run.json and resume checks)."""
        digest = hashlib.sha256("\n".join(f"{i.file}\t{i.label}" for i in self.items).encode()).hexdigest()
        return {"root": self.root, "num_images": len(self.items), "num_classes": len(self.class_names),
                "items_sha256": digest}


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
                max_images: int | None = None) -> ImageSet:
    """Open `--data` (a directory in ImageFolder layout, or ``digits[:train|:test]``)."""
    if data == "digits" or data.startswith("digits:"):
        image_set = _open_digits(data, preprocessing, preprocess)
    else:
        image_set = _open_folder(data, preprocessing, preprocess)
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


def _reindexed(image_set: ImageSet, items: list[ImageItem]) -> ImageSet:
    """An ImageSet over a sub-list, loading by position in the new list."""
    base_loader = image_set.loader
    index_of = {id(it): i for i, it in enumerate(image_set.items)}
    base_pos = [index_of[id(it)] for it in items]
    return ImageSet(root=image_set.root, items=items, class_names=image_set.class_names,
                    loader=lambda pos: base_loader(base_pos[pos]))


def parse_classes(spec: str, class_names: list[str]) -> list[int]:
    """Parse `--classes`: comma-separated indices, ranges `a-b` (inclusive) or class folder names."""
    out: list[int] = []
    by_name = {name: i for i, name in enumerate(class_names)}
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if re.fullmatch(r"\d+-\d+", token):
            lo, hi = (int(x) for x in token.split("-"))
            if lo > hi:
                raise ConfigError(f": empty range '{token}'", param="classes")
            out.extend(range(lo, hi + 1))
        elif token.isdigit() and token not in by_name:
            out.append(int(token))
        elif token in by_name:
            out.append(by_name[token])
        else:
            raise ConfigError(f": unknown class '{token}'", param="classes")
    for idx in out:
        if not 0 <= idx < len(class_names):
            raise ConfigError(f": class index {idx} out of range (0-{len(class_names) - 1})", param="classes")
    if not out:
        raise ConfigError("selects no class", param="classes")
    return sorted(set(out))


def _open_folder(data: str, preprocessing: dict[str, Any], preprocess: str) -> ImageSet:
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{data}: not a directory (expected class folders, or digits[:train|:test])", param="data")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(f"{data}: no class folders (ImageFolder layout: DIR/<class>/<image>)", param="data")
    items = []
    for label, cdir in enumerate(class_dirs):
        for f in sorted(cdir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(ImageItem(str(f.relative_to(root)), label))
    if not items:
        raise InputError(f"{data}: no image files in its class folders", param="data")
    transform = build_transform(preprocessing, preprocess)
    mode = "L" if int(preprocessing.get("input_size", (3,))[0]) == 1 or preprocessing.get("kind") == "digits" else "RGB"

    def load(pos: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(root / items[pos].file) as img:
            return transform(img.convert(mode))

    return ImageSet(root=str(root), items=items, class_names=[d.name for d in class_dirs], loader=load)


def _open_digits(data: str, preprocessing: dict[str, Any], preprocess: str) -> ImageSet:
    from .digits import digits_arrays
    from ..models.digits import load_digits_spec

    split = data.split(":", 1)[1] if ":" in data else "all"
    if split not in ("train", "test", "all"):
        raise InputError(f"{data}: the digits split is 'train' or 'test'", param="data")
    if preprocessing.get("kind") != "digits":
        raise InputError("digits needs a model trained on digits (8x8 grey images), e.g. --model digits", param="data")
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


def shard_positions(num_items: int, shard: tuple[int, int] | None) -> list[int]:
    """Positions of shard I of N: every N-th image starting at I (classes stay balanced)."""
    if shard is None:
        return list(range(num_items))
    index, count = shard
    return list(range(index, num_items, count))


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
