"""Per-class reports: counts from the one evaluation pass agree with counting by hand; bench's report names
the class a compression broke; a thousand classes keep the Markdown short."""

from __future__ import annotations

import copy
import csv
import io
import json

import numpy as np
import pytest
import torch

from conftest import make_tiny

from pathprune.evaluate.per_class import (class_counts, per_class_report, per_class_table, summary_line,
                                          wilson_interval, worst_classes)
from pathprune.evaluate.per_class_report import PLOT_CLASSES, per_class_markdown, plot_per_class

BROKEN_CLASS = 3


def _count_by_hand(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int):
    """Independent counts: one image at a time, a Python loop over labels."""
    correct, total = [0] * num_classes, [0] * num_classes
    with torch.no_grad():
        for image, label in zip(x, y.tolist()):
            total[label] += 1
            correct[label] += int(model(image[None]).argmax(-1).item() == label)
    return correct, total


def test_per_class_counts_of_the_one_pass_match_counting_by_hand():
    from pathprune.evaluate import evaluate_models

    dense, _ = make_tiny(seed=0, num_classes=5)
    other, _ = make_tiny(seed=1, num_classes=5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, 32, 32, generator=gen)
    y = torch.randint(0, 5, (37,), generator=gen)
    y[y == 4] = 0  # class 4 has no image: counted 0 of 0
    ev = evaluate_models({"dense": dense, "other": other}, (x, y), batch_size=8)
    assert ev.num_classes == 5
    for name, model in (("dense", dense), ("other", other)):
        correct, total = ev.per_class(name)
        assert (correct.tolist(), total.tolist()) == _count_by_hand(model, x, y, 5)
    table = per_class_table(ev.labels, ev.preds["other"], ev.preds["dense"], [f"c{i}" for i in range(5)],
                            resamples=500)
    hand_other, hand_total = _count_by_hand(other, x, y, 5)
    hand_dense, _ = _count_by_hand(dense, x, y, 5)
    assert [r["class"] for r in table["rows"]] == [0, 1, 2, 3]  # only classes with images
    for r in table["rows"]:
        c = r["class"]
        assert (r["images"], r["correct"], r["dense_correct"]) == (hand_total[c], hand_other[c], hand_dense[c])
        assert r["deviation"] == pytest.approx((hand_other[c] - hand_dense[c]) / hand_total[c])
        lo, hi = r["deviation_ci95"]
        assert lo <= r["deviation"] <= hi
        assert r["top1_ci95"][0] <= r["top1"] <= r["top1_ci95"][1]


def test_class_counts_and_wilson_interval_against_known_values():
    assert [a.tolist() for a in class_counts([2, 2, 0, 1, 2], [2, 0, 0, 1, 1], 4)] == [[1, 1, 1, 0], [1, 1, 3, 0]]
    # the Wilson interval inverts the score test: each end p0 has |k/n - p0| = z * sqrt(p0 (1 - p0) / n)
    z = 1.959963984540054
    for k, n in ((9, 10), (3, 50), (17, 17 + 4)):
        for p0 in wilson_interval(k, n):
            assert abs(k / n - p0) == pytest.approx(z * np.sqrt(p0 * (1 - p0) / n), abs=1e-12)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


@pytest.fixture(scope="module")
def broken_bench(tmp_path_factory):
    """bench of the digits model against a copy whose classifier row of one class is zeroed."""
    from pathprune import create_model, open_images
    from pathprune.evaluate.bench import BenchModel, BenchSettings, run_bench

    dense, spec = create_model("digits")
    broken = copy.deepcopy(dense)
    with torch.no_grad():
        broken.head.weight[BROKEN_CLASS] = 0
        broken.head.bias[BROKEN_CLASS] = 0
    images = open_images("digits:test", spec.preprocessing)
    out = tmp_path_factory.mktemp("per-class") / "bench"
    settings = BenchSettings(batch_sizes=(2,), warmup=0, repeats=1, rounds=1, backends=("ort-cpu", "torch-cpu"),
                             exporter="torchscript", bootstrap=1000)
    report = run_bench([BenchModel(spec.name, dense, spec, "dense", 0.0),
                        BenchModel("broken", broken, spec, "pruned", 0.0)], images, settings, out)
    return {"report": report, "out": out, "dense": dense, "broken": broken, "images": images}


def test_bench_names_the_broken_class_first_with_a_significant_drop(broken_bench):
    report = json.loads((broken_bench["out"] / "report.json").read_text())
    per_class = report["per_class"]
    assert per_class["reference"] == report["dense"] and per_class["model_classes"] == 10
    entries = {(v["variant"], v["backend"]): v for v in per_class["variants"]}
    # every variant but the dense torch model, the ONNX graphs through onnxruntime's own predictions
    assert set(entries) == {("broken (torch)", "torch (cpu)"), ("broken (onnx fp32)", "ort-cpu"),
                            (f"{report['dense']} (onnx fp32)", "ort-cpu")}
    for key in (("broken (torch)", "torch (cpu)"), ("broken (onnx fp32)", "ort-cpu")):
        worst = worst_classes(entries[key]["rows"])[0]
        assert worst["class"] == BROKEN_CLASS and worst["significant"] and worst["deviation_ci95"][1] < 0
        assert worst["deviation"] < -0.5
        assert entries[key]["summary"]["lost_significantly"] >= 1
    # counts agree with the models run image by image
    images = broken_bench["images"]
    x = torch.stack([images.loader(i) for i in range(len(images.items))])
    y = torch.tensor([item.label for item in images.items])
    hand_broken, hand_total = _count_by_hand(broken_bench["broken"], x, y, 10)
    hand_dense, _ = _count_by_hand(broken_bench["dense"], x, y, 10)
    rows = entries[("broken (torch)", "torch (cpu)")]["rows"]
    assert [r["images"] for r in rows] == hand_total
    assert [r["correct"] for r in rows] == hand_broken
    assert [r["dense_correct"] for r in rows] == hand_dense
    assert [r["name"] for r in rows] == [str(i) for i in range(10)]  # the digits model's class names
    # the existing model and variant rows are untouched by the per-class entry
    assert {"top1", "top1_deviation", "top1_deviation_ci95"} <= set(report["models"][1])


def test_bench_report_files_show_the_worst_classes(broken_bench):
    out = broken_bench["out"]
    md = (out / "report.md").read_text()
    assert "## Per-class accuracy" in md and "![per-class accuracy](per_class.png)" in md
    table = md.split("### `broken (torch)` (torch (cpu)): the classes that lost most")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| class | images | dense top-1")
    assert table[2].startswith(f"| {BROKEN_CLASS} | ") and table[2].endswith("| **yes** |")
    assert "- `broken (torch)` (torch (cpu)): " in md and "classes lost significantly" in md
    assert md.index("## Per-class accuracy") < md.index("## Latency and memory")
    assert (out / "per_class.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(io.StringIO((out / "per_class.csv").read_text())))
    assert len(rows) == 3 * 10  # three compared variants, ten classes
    broken = next(r for r in rows if r["variant"] == "broken (torch)" and r["class"] == str(BROKEN_CLASS))
    assert broken["significant"] == "True" and float(broken["deviation"]) < -0.5


def test_terminal_prints_the_worst_classes(broken_bench):
    from types import SimpleNamespace

    from pathprune.cli.report import bench_report

    lines = []
    bench_report(broken_bench["report"], SimpleNamespace(out="OUT"), lines.append)
    line = next(l for l in lines if l.startswith("per class, broken (torch) (torch (cpu)): "))
    assert f"worst: {BROKEN_CLASS} -" in line and "*" in line.split("worst: ")[1].split(",")[0]


def test_a_thousand_classes_keep_the_markdown_short_and_the_plot_readable(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1000), 5)
    dense = labels.copy()
    dense[rng.random(labels.size) < 0.2] = 0
    compressed = dense.copy()
    compressed[rng.random(labels.size) < 0.2] = 1
    names = [f"class {i}" for i in range(1000)]
    entry = per_class_report(labels, dense, [{"variant": "pruned (torch)", "backend": "torch (cpu)",
                                              "model": "pruned", "preds": compressed}], names,
                             dense="dense", resamples=200)
    report = {"dense": "dense", "data": "synthetic", "per_class": entry}
    rows = entry["variants"][0]["rows"]
    assert len(rows) == 1000
    md = per_class_markdown(report)
    table = [l for l in md if l.startswith("| ")]
    assert len(table) == 1 + 10  # the header and the worst 10 of 1000 classes
    worst = worst_classes(rows)[0]
    assert table[1].startswith(f"| {worst['name']} | 5 | ")
    assert sum(len(l) for l in md) < 5000
    assert summary_line(entry["variants"][0]["summary"]).startswith(
        f"{entry['variants'][0]['summary']['lost_significantly']} of 1000 classes lost significantly")
    path = plot_per_class(report, tmp_path / "per_class.png")
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    assert width < 120 * (0.32 * PLOT_CLASSES + 4) and height < 120 * 10  # 30 classes shown, not 1000


def test_class_names_say_what_the_class_is():
    from pathprune.data.labels import imagenet_classes
    from pathprune.evaluate.per_class import readable_class_names

    wnids = imagenet_classes(1000)
    if wnids is None:
        pytest.skip("timm's ImageNet class list is not installed")
    names = readable_class_names(wnids, 1000)
    assert names[0] == "n01440764 tench" and len(names) == 1000
    assert readable_class_names(["cat", "dog"], 2) == ["cat", "dog"]
    assert readable_class_names(["cat"], 3) == ["0", "1", "2"]  # names of another model: indices
