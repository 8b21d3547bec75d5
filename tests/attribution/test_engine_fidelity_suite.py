"""The fidelity benchmark's measures (benchmarks/engine_fidelity.py) and the committed shapes model."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import engine_fidelity as ef


def test_agreement_counts_top_k_sets():
    ref = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])  # [images, layers, K]
    path = torch.tensor([[[2, 1], [3, 9]], [[5, 6], [7, 8]]])  # same set at (0, 0); one neuron off at (0, 1)
    neurons, images = ef.agreement(path, ref)
    assert neurons == pytest.approx(7 / 8) and images == pytest.approx(1 / 2)


def test_pass_rule():
    row = {"agreement": 0.996, "pruning": {0.7: {"differ": 0}, 0.9: {"differ": 3, "low": -0.01, "high": 0.002}}}
    assert ef.passes(row, 0.995)
    assert not ef.passes({**row, "agreement": 0.99}, 0.995)
    worse = {**row, "pruning": {0.7: {"differ": 2, "low": -0.02, "high": -0.001}}}
    assert not ef.passes(worse, 0.995)


def test_variants_parse_into_path_configs():
    config = ef.variant_config(ef.parse_variant("gauss4:bfloat16:scoring=quadrature"), None)
    assert (config.quadrature, config.steps, config.dtype, config.scoring) == ("gauss", 4, "bfloat16", "quadrature")
    assert ef.variant_config(ef.parse_variant("riemann20"), 8).validate().max_batch == 8


def test_refine_settings_parse():
    assert ef.parse_refine("4+16@0.3") == ("gauss", 4, "float32", 16, 0.3)
    assert ef.parse_refine("3+12:bfloat16") == ("gauss", 3, "bfloat16", 12, 1.0)
    assert ef.label(ef.parse_refine("4+16@0.3")) == "gauss 4 + refine 16 (tol 0.3)"
    config = ef.variant_config(ef.parse_variant("gauss4:float32:refine_steps=16:refine_tol=0.1:topk=5"), None)
    assert (config.refine_steps, config.refine_tol, config.topk) == (16, 0.1, 5) and config.validate().refining
    assert not ef.variant_config(ef.parse_variant("gauss8:float32:refine_steps=0"), None).refining


def test_render_and_combine_round_trip(tmp_path):
    import json

    row = {"model": "digits", "case": "default", "setting": "gauss 4", "quad": "gauss", "nodes": 4,
           "dtype": "float32", "agreement": 1.0, "images_equal": 1.0, "jas_err": 1e-6, "seconds": 1.0,
           "ref_seconds": 8.0, "pruning": {0.7: {"differ": 0, "kept": 10}, 0.9: {"differ": 0, "kept": 3}}}
    part = {"load_start": "1/1/1", "load_end": "1/1/1", "elapsed": 60.0, "threads": 1,
            "fidelity": {"models": {"digits": {"desc": "d", "images": 10, "test_images": 5, "test_top1": 0.9,
                                               "layers": 6, "token": "cls"}}, "rows": [row]},
            "speed": {"times": {"gauss4": [2.0, 2.2], "published_m20": [40.0, 48.4]}, "memory": {},
                      "model": "m", "img_size": 32, "batch": 2, "variants": ["gauss4"], "repeats": 2,
                      "device": "cpu"}}
    raw = tmp_path / "a.json"
    raw.write_text(json.dumps(part))
    args = argparse.Namespace(device="cpu", bar=0.995)
    text = ef.render(args, ef.combine([str(raw)]))
    assert "| digits | default | gauss 4 | 1.0000 |" in text
    assert "| gauss4 | 2.10 | 0.952 | 21.00x (20.00-22.00) |" in text


def test_committed_shapes_model_is_the_trained_one(tmp_path):
    """The float16 weights load into the architecture and classify the generated shapes (trained: 0.742
    on 1000 test images; chance 0.1)."""
    from benchmarks.fixtures.shapes_model import load_shapes_model, shapes_data
    from pathprune.data.images import open_images

    model, spec = load_shapes_model()
    assert spec.token_scope == "patches" and len(model.blocks) == 8
    root = shapes_data(train=0, test=100, root=tmp_path / "shapes")
    images = open_images(str(root / "test"), spec.preprocessing)
    x = torch.stack([images.loader(i) for i in range(len(images.items))])
    y = torch.tensor([it.label for it in images.items])
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
    assert accuracy > 0.5
