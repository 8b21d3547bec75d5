"""Class labels of image folders: which folder is which class of a model (README "Data layouts and
labels"), class maps and labels files, ImageNet's class names, and `classes` selections."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, InputError


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


def read_labels_file(path: str, files: list[str], label_of: Callable[[str], int], where: str) -> dict[str, int]:
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
