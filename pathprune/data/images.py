"""Image lists and preprocessing: ImageFolder / ImageNet-val layout, and the embedded digits data."""

from __future__ import annotations

import functools
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


def _reindexed(image_set: ImageSet, items: list[ImageItem]) -> ImageSet:
    """An ImageSet over a sub-list, loading by position in the new list."""
    base_loader = image_set.loader
    index_of = {id(it): i for i, it in enumerate(image_set.items)}
    base_pos = [index_of[id(it)] for it in items]
    return ImageSet(root=image_set.root, items=items, class_names=image_set.class_names,
                    loader=lambda pos: base_loader(base_pos[pos]), label_source=dict(image_set.label_source))


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


def read_class_map(path: str) -> dict[str, int]:
    """`--class-map FILE`: folder name -> class index, as a JSON object or two-column text lines."""
    import json

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})", param="class_map") from None
    mapping: dict[str, Any]
    if text.lstrip().startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})", param="class_map") from None
    else:
        mapping = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.replace(",", " ").replace("\t", " ").split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise InputError(f"{path}:{number}: expected 'FOLDER INDEX'", param="class_map")
            mapping[fields[0]] = fields[1]
    out = {}
    for name, index in mapping.items():
        try:
            out[str(name)] = int(str(index))
        except ValueError:
            raise InputError(f"{path}: class index of '{name}' is not an integer: {index!r}", param="class_map") from None
    return out


def imagenet_classes(num_classes: int | None) -> list[str] | None:
    """The ImageNet synsets (wnids) in the index order of a model with `num_classes` outputs (timm's info)."""
    found = _imagenet_classes(num_classes)
    return list(found) if found is not None else None


@functools.lru_cache(maxsize=8)
def _imagenet_classes(num_classes: int | None) -> tuple[str, ...] | None:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes}) if num_classes else None
    if subset is None:
        return None
    try:
        return tuple(ImageNetInfo(subset).label_names())
    except (AssertionError, OSError, FileNotFoundError):
        return None


def folder_labels(folders: Sequence[str], num_classes: int | None, class_names: Sequence[str] | None = None,
                  class_map: dict[str, int] | None = None, where: str = "data") -> tuple[dict[str, int], list[str]]:
    """Class index of each folder name, and the class list the indices refer to.

    In this order: a `class_map`; ImageNet wnids (n01440764) for ImageNet-sized models (timm's
    ImageNetInfo); the model's own `class_names`; integer folder names as the indices themselves;
    as many folders as the model has classes, sorted (the ImageFolder convention). Any other folder
    set is an error naming the fix.
    """
    folders = list(folders)
    if class_map is not None:
        missing = [f for f in folders if f not in class_map]
        if missing:
            raise InputError(f"`class_map` has no entry for the folder '{missing[0]}' (and {len(missing) - 1} more) of "
                             f"{where}")
        size = num_classes or (max(class_map.values()) + 1)
        bad = [f for f in folders if not 0 <= class_map[f] < size]
        if bad:
            raise InputError(f"`class_map` maps '{bad[0]}' to {class_map[bad[0]]}, outside the model's "
                             f"{size} classes (0-{size - 1})")
        names = [str(i) for i in range(size)]
        for name, index in class_map.items():
            if 0 <= index < size:
                names[index] = name
        return {f: class_map[f] for f in folders}, names
    if num_classes is None:
        return {f: i for i, f in enumerate(folders)}, folders
    return _model_folder_labels(folders, num_classes, class_names, where)


#: a folder name that reads as an integer (with sign or leading zeros too): never sorted-order material
_INTEGER = re.compile(r"[+-]?\d+")
_WNID = re.compile(r"n\d{8}")


def _model_folder_labels(folders: list[str], num_classes: int, class_names: Sequence[str] | None,
                         where: str) -> tuple[dict[str, int], list[str]]:
    """The label rules of README "Data layouts and labels", for a model with `num_classes` classes.

    Every folder is labelled by the same rule; a folder set that two rules read differently, or that
    no rule reads, is refused (InputError naming --class-map).
    """
    shown = ", ".join(folders[:4]) + (", ..." if len(folders) > 4 else "")

    def refuse(problem: str) -> InputError:
        return InputError(f"(folder name -> class index) is needed: {where}: {problem}", param="class_map")

    readings: list[tuple[str, dict[str, int], list[str]]] = []
    wnids = imagenet_classes(num_classes)
    if wnids is not None and all(_WNID.fullmatch(f) for f in folders):
        index = {w: i for i, w in enumerate(wnids)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise refuse(f"folder '{unknown[0]}' is not one of the {num_classes} ImageNet classes of the model")
        readings.append(("ImageNet wnids", {f: index[f] for f in folders}, list(wnids)))
    names = [str(n) for n in class_names] if class_names else []
    if names and all(f in names for f in folders):
        twice = [f for f in folders if names.count(f) > 1]
        if twice:
            raise refuse(f"the model has several classes named '{twice[0]}'")
        readings.append(("class names", {f: names.index(f) for f in folders}, names))
    integer_problem = None
    if all(_INTEGER.fullmatch(f) for f in folders):
        values = {f: int(f) for f in folders}
        signed = [f for f in folders if f[0] in "+-"]
        outside = [f for f in folders if not 0 <= values[f] < num_classes]
        by_value: dict[int, list[str]] = {}
        for f in folders:
            by_value.setdefault(values[f], []).append(f)
        same = next((fs for fs in by_value.values() if len(fs) > 1), None)
        if signed:
            integer_problem = f"folder '{signed[0]}' is a signed number, not a class index"
        elif outside:
            integer_problem = (f"folder '{outside[0]}' is outside the model's {num_classes} class indices "
                               f"(0-{num_classes - 1})")
        elif same:
            integer_problem = f"folders '{same[0]}' and '{same[1]}' name the same class index {values[same[0]]}"
        else:
            readings.append(("class indices", values, [str(i) for i in range(num_classes)]))
    if readings:
        first = readings[0]
        for other in readings[1:]:
            if other[1] != first[1]:
                f = next(f for f in folders if other[1][f] != first[1][f])
                raise refuse(f"folder '{f}' is class {first[1][f]} as one of the model's {first[0]} but class "
                             f"{other[1][f]} as one of its {other[0]}")
        names_out = names if names and len(names) == num_classes else first[2]
        return first[1], list(names_out)
    if integer_problem is not None:
        raise refuse(integer_problem)
    numeric = [f for f in folders if _INTEGER.fullmatch(f)]
    named = [f for f in folders if f in names]
    wnid_like = [f for f in folders if wnids is not None and _WNID.fullmatch(f)]
    for kind, found in (("a number", numeric), ("one of the model's class names", named),
                        ("an ImageNet wnid", wnid_like)):
        if found:
            raise refuse(f"folder '{found[0]}' is {kind} but other folders ({shown}) are not, so the labels "
                         "would be guessed")
    if len(folders) == num_classes:
        return {f: i for i, f in enumerate(folders)}, folders
    raise refuse(f"{len(folders)} class folders ({shown}) do not match the model's {num_classes} classes (or name "
                 "the folders by the model's class names, ImageNet wnids or class indices)")


def _read_labels_file(path: str, files: list[str], label_of: Callable[[str], int], where: str) -> dict[str, int]:
    """`--labels FILE` for a flat directory: `FILE LABEL` lines (LABEL an index or a class name) or the
    Kaggle `LOC_val_solution.csv` (ImageId,PredictionString with the wnid first)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})", param="labels") from None
    stems = {Path(f).stem: f for f in files}
    names = {Path(f).name: f for f in files}
    out: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        fields = line.replace(",", " ").replace("\t", " ").split()
        if not fields or fields[0].startswith("#") or fields[0] == "ImageId":
            continue
        if len(fields) < 2:
            raise InputError(f"{path}:{number}: expected 'FILE LABEL' (one label per line is ambiguous: the "
                             "devkit's 1-based ILSVRC ids are not the model's indices)", param="labels")
        key = fields[0]
        file = names.get(key) or names.get(Path(key).name) or stems.get(key) or stems.get(Path(key).stem)
        if file is None:
            continue  # a label for a file that is not in the directory
        try:
            label = label_of(fields[1])
        except InputError as exc:
            raise InputError(f"{path}:{number}: {exc.message}", param="labels") from None
        if file in out and out[file] != label:
            raise InputError(f"{path}:{number}: {file} is labelled {label} here but {out[file]} on line "
                             f"{first_line[file]}; give each image one label", param="labels")
        out[file] = label
        first_line.setdefault(file, number)
    missing = [f for f in files if f not in out]
    if missing:
        raise InputError(f"{path} has no label for {missing[0]} (and {len(missing) - 1} more) of {where}",
                         param="labels")
    return out


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

        file_labels = _read_labels_file(labels, files, label_of, data)
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
