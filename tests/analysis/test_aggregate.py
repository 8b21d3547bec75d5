"""Aggregation of analyze outputs into per-neuron importance (oracle: recount paths.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_model_args, make_folder, make_tiny


@pytest.fixture(scope="module")
def analysis_dir(tmp_path_factory) -> Path:
    """A tiny analyze run (3 classes, top-2 paths) over an ImageFolder with unequal class sizes."""
    from safetensors.torch import save_file

    from pathprune.cli import main

    root = tmp_path_factory.mktemp("agg")
    folder = make_folder(root / "images", broken=False)
    (folder.root / "cat" / "a.png").unlink()  # cat: 3 images, the others 4 -> balancing matters
    model, _ = make_tiny(seed=0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = root / "analysis"
    try:
        main(["analyze", *cli_model_args(weights), "--data", str(folder.root), "--out", str(out),
              "--steps", "2", "--topk", "2", "--batch-size", "4", "--workers", "0", "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


def _records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "paths.jsonl").read_text().splitlines()]


def _recount(records: list[dict], key: str, layer: int, width: int, classes: set[int] | None = None) -> torch.Tensor:
    """Class-balanced frequency written independently: mean over classes of hits / images."""
    per_class: dict[int, list[torch.Tensor]] = {}
    for r in records:
        if classes is not None and r["label"] not in classes:
            continue
        hits = torch.zeros(width, dtype=torch.float64)
        hits[list(r[key][layer])] = 1.0
        per_class.setdefault(r["label"], []).append(hits)
    return torch.stack([torch.stack(v).mean(0) for v in per_class.values()]).mean(0)


@pytest.mark.parametrize("kind,key", [("path", "path"), ("activation-path", "act_path")])
def test_frequency_equals_class_balanced_recount(analysis_dir, kind, key):
    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_frequency, path_importance

    analysis = load_analysis(analysis_dir)
    records = _records(analysis_dir)
    assert sorted({r["label"] for r in records}) == [0, 1, 2]
    freq = path_frequency(analysis, kind)
    score = path_importance(analysis, kind)
    for layer, width in enumerate(analysis.widths):
        expected = _recount(records, key, layer, width)
        torch.testing.assert_close(freq[layer], expected, rtol=0, atol=1e-12)
        # the tie-breaker never changes the frequency order, and makes every score distinct
        assert (score[layer] - expected).abs().max() < 1e-8
        assert len(set(score[layer].tolist())) == width
        assert abs(float(freq[layer].sum()) - 2.0) < 1e-9  # top-2: two neurons per image and layer


def test_tie_breaker_is_the_class_balanced_dense_sum(analysis_dir):
    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_importance

    analysis = load_analysis(analysis_dir)
    dense = path_importance(analysis, "path", primary="dense")
    t = analysis.tensors
    counts = t["class_count"].double()
    expected = (t["jas_sum.1"].double() / counts[:, None]).mean(0)
    torch.testing.assert_close(dense[1], expected)
    score = path_importance(analysis, "path")[1]
    freq = _recount(_records(analysis_dir), "path", 1, analysis.widths[1])
    # among neurons with equal frequency, the order is that of the dense score
    unvisited = (freq == 0).nonzero().flatten()
    assert len(unvisited) > 2
    assert torch.equal(torch.argsort(score[unvisited]), torch.argsort(expected[unvisited]))


def test_class_restriction(analysis_dir):
    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_frequency

    analysis = load_analysis(analysis_dir)
    records = _records(analysis_dir)
    names = analysis.class_names
    freq = path_frequency(analysis, "path", classes=f"0,{names[2]}")
    for layer, width in enumerate(analysis.widths):
        torch.testing.assert_close(freq[layer], _recount(records, "path", layer, width, {0, 2}),
                                   rtol=0, atol=1e-12)
    assert not torch.equal(freq[0], path_frequency(analysis, "path")[0])


def test_bad_inputs(analysis_dir, tmp_path):
    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_importance
    from pathprune.errors import UserError

    with pytest.raises(UserError, match="not a directory"):
        load_analysis(tmp_path / "missing")
    with pytest.raises(UserError, match="analyze output"):
        load_analysis(tmp_path)
    analysis = load_analysis(analysis_dir)
    with pytest.raises(UserError, match="unknown class"):
        path_importance(analysis, "path", classes="nope")
    with pytest.raises(UserError, match="unknown path importance"):
        path_importance(analysis, "magnitude")
