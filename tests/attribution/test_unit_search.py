"""Paths through attention heads (and MLP neurons): every greedy choice and the final path's JAS
against an independent autograd oracle written here.

The oracle never uses pathprune's interventions: its own pre-hooks on ``attn.proj`` (heads: Dh columns
each) and ``mlp.fc2`` (neurons) clone the input and write fresh leaf tensors alpha * clean at the
scope's tokens; torch.autograd.grad of the target's probability per image and quadrature node; the
paper form's formulas (JAS(P + u) = JAS(P) + sum over u's columns and tokens of a * IG).
"""

from __future__ import annotations

import pytest
import torch

from pathprune.attribution import PathConfig, quadrature_nodes
from pathprune.attribution.units import UnitPathSearch
from pathprune.models import token_range

from conftest import make_tiny

HEADS, DH = 4, 6
BATCH = 2


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=5, num_heads=HEADS)[0]


def _site(model, kind, block):
    return model.blocks[block].attn.proj if kind == "head" else model.blocks[block].mlp.fc2


def _sublayers(units, depth):
    out = []
    for b in range(depth):
        out.append(("head", b))
        if units == "heads+neurons":
            out.append(("neuron", b))
    return out


def oracle_clean(model, image, sublayers):
    acts = {}
    hooks = [_site(model, k, b).register_forward_pre_hook(
        lambda m, a, s=s: acts.__setitem__(s, a[0].detach().clone())) for s, (k, b) in enumerate(sublayers)]
    with torch.no_grad():
        model(image)
    for h in hooks:
        h.remove()
    return acts


def oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1):
    """scaled: sublayer -> column ids; returns sublayer -> sum_i w_i dF/d(entries) [T, C]."""
    alphas, weights = quadrature_nodes(config.quadrature, config.steps)
    total = {s: 0.0 for s in scaled}
    for alpha, weight in zip(alphas.tolist(), weights.tolist()):
        leaves = {s: (alpha * acts[s][0, t0:t1][:, cols]).clone().requires_grad_(True) for s, cols in scaled.items()}

        def hook(m, args, s):
            h = args[0].clone()
            h[0, t0:t1, scaled[s]] = leaves[s]
            return (h,)

        hooks = [_site(model, *sublayers[s]).register_forward_pre_hook(lambda m, a, s=s: hook(m, a, s)) for s in scaled]
        try:
            with torch.enable_grad():
                prob = model(image).softmax(-1)[0, target]
                grads = torch.autograd.grad(prob, [leaves[s] for s in scaled])
        finally:
            for h in hooks:
                h.remove()
        for s, g in zip(scaled, grads):
            total[s] = total[s] + weight * g
    return total


def columns(kind, units):
    if kind == "neuron":
        return torch.as_tensor(units)
    return torch.cat([torch.arange(int(u) * DH, (int(u) + 1) * DH) for u in units])


CASES = [("heads", "cls", 1), ("heads", "all", 2), ("heads+neurons", "cls", 1), ("heads+neurons", "patches", 2)]


@pytest.mark.parametrize("units, token, k", CASES)
def test_every_greedy_choice_and_the_path_jas_match_the_oracle(model, units, token, k):
    config = PathConfig(topk=k, steps=3, token=token, max_batch=4, refine_steps=0)  # the plain 3-node rule
    gen = torch.Generator().manual_seed(3)
    images, labels = torch.randn(BATCH, 3, 32, 32, generator=gen), torch.tensor([0, 2])
    result = UnitPathSearch(model, config, units=units).attribute(images, labels)
    sublayers = _sublayers(units, 2)
    assert result.sublayers == sublayers
    t0, t1 = token_range(model, token)
    for b in range(BATCH):
        image, target = images[b:b + 1], int(labels[b])
        acts = oracle_clean(model, image, sublayers)
        for s, (kind, block) in enumerate(sublayers):
            scaled = {p: columns(sublayers[p][0], result.path[p][b].tolist()) for p in range(s)}
            width = acts[s].shape[-1]
            scaled[s] = torch.arange(width)
            gbar = oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1)
            marginal = (acts[s][0, t0:t1] * gbar[s]).sum(0)  # [C]
            per_unit = marginal.view(-1, DH).sum(-1) if kind == "head" else marginal
            torch.testing.assert_close(result.candidate_jas[s][b].double(), per_unit.double(), rtol=2e-4, atol=1e-6)
            expected = set(torch.topk(per_unit, k).indices.tolist())
            assert set(result.path[s][b].tolist()) == expected, (b, s)
        # the final path's JAS: only the path scaled
        scaled = {s: columns(kind, result.path[s][b].tolist()) for s, (kind, _) in enumerate(sublayers)}
        gbar = oracle_ig(model, image, target, acts, sublayers, scaled, config, t0, t1)
        jas = sum(float((acts[s][0, t0:t1][:, cols] * gbar[s]).sum()) for s, cols in scaled.items())
        assert float(result.path_jas[b]) == pytest.approx(jas, rel=2e-4, abs=1e-6)


def test_heads_need_an_additive_form_and_the_model_is_unchanged(model):
    from pathprune.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        UnitPathSearch(model, PathConfig(jas="reference"))
    assert err.value.param == "jas"
    with pytest.raises(ConfigError):
        UnitPathSearch(model, PathConfig(topk=5))  # 4 heads per block
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    UnitPathSearch(model, PathConfig(steps=2)).attribute(torch.zeros(1, 3, 32, 32), torch.tensor([1]))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert flags == [p.requires_grad for p in model.parameters()] and not model.training


# --------------------------------------------------------------------------------------------
# analyses with heads: per-head statistics (format 3), resumable, mergeable, path importance


class Crash(Exception):
    pass


def _images(n: int = 6):
    gen = torch.Generator().manual_seed(9)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.arange(n) % 3


def test_head_statistics_save_load_merge_and_give_path_importance(model):
    from pathprune.analysis import Analysis
    from pathprune.analysis.statistics import HEADS_FORMAT, PathStatistics
    from pathprune.pruning.heads import create_head_importance

    x, y = _images()
    config = PathConfig(topk=1, steps=2, token="cls", refine_steps=0)
    from pathprune.attribution import NeuronPathSearch

    neurons = NeuronPathSearch(model, config)
    heads = UnitPathSearch(model, config, units="heads")
    whole = PathStatistics(3, [48, 48], head_counts=[HEADS, HEADS])
    parts = [PathStatistics(3, [48, 48], head_counts=[HEADS, HEADS]) for _ in range(2)]
    for part, sl in zip(parts, (slice(0, 4), slice(4, 6))):
        n, h = neurons.attribute(x[sl], y[sl]), heads.attribute(x[sl], y[sl])
        for stats in (part, whole):
            stats.add(y[sl], n)
            stats.add_heads(y[sl], h)
    parts[0].merge(parts[1])
    assert whole.format == HEADS_FORMAT
    for key, value in whole.tensors().items():
        assert torch.equal(value, parts[0].tensors()[key]), key
    counts = whole.tensors()["head_path_count.0"]
    assert counts.sum() == 6 and counts.shape == (3, HEADS)  # one head per image (topk 1)
    importance = create_head_importance("path", analysis=Analysis.from_statistics(whole, ["a", "b", "c"]))
    scores = importance.fit(model).head_scores()
    expected = (counts.double() / whole.class_count.double()[:, None]).mean(0)
    torch.testing.assert_close(scores[0], expected, atol=1e-6, rtol=0)
    with pytest.raises(Exception):
        PathStatistics(3, [48, 48]).merge(whole)  # with and without heads


def test_analyze_with_heads_resumes_and_equals_an_uninterrupted_run(tmp_path, tiny_weights):
    from safetensors.torch import load_file

    from pathprune.analysis.run import RunSettings, analyze
    from pathprune.data import open_images
    from pathprune.models import create_model

    from conftest import make_folder, tiny_model_args

    folder = make_folder(tmp_path / "images", broken=False)
    weights_model, spec = create_model("vit_tiny_patch16_224", str(tiny_weights), img_size=32, num_classes=3,
                                       model_args=tiny_model_args())
    images = open_images(str(folder.root), spec.preprocessing)
    settings = RunSettings(path=PathConfig(topk=1, steps=2, token="cls", refine_steps=0), batch_size=3, units="heads")
    analyze(weights_model, spec, images, settings, tmp_path / "whole", progress=False)

    def crash_after(n):
        def hook(done):
            if done >= n:
                raise Crash
        return hook

    with pytest.raises(Crash):
        analyze(weights_model, spec, images, settings, tmp_path / "resumed", progress=False, checkpoint_seconds=0,
                on_batch=crash_after(2))
    analyze(weights_model, spec, images, settings, tmp_path / "resumed", progress=False)
    whole = load_file(str(tmp_path / "whole" / "stats.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "stats.safetensors"))
    assert sorted(whole) == sorted(resumed) and "head_jas_sum.1" in whole
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    assert (tmp_path / "whole" / "paths.jsonl").read_bytes() == (tmp_path / "resumed" / "paths.jsonl").read_bytes()
    import json

    run = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert run["format"] == "pathprune.analyze/3" and run["settings"]["units"] == "heads"


def test_heads_take_the_refinement_rule_when_the_config_refines(model):
    """The unit search has no adaptive refinement: a refining config runs every sublayer at `refine_steps`
    nodes (what a refined neuron search approximates), a plain config at `steps`."""
    assert PathConfig().refining
    assert UnitPathSearch(model, PathConfig()).steps == PathConfig.refine_steps
    assert UnitPathSearch(model, PathConfig(steps=3, refine_steps=0)).steps == 3
    assert len(UnitPathSearch(model, PathConfig()).alphas) == PathConfig.refine_steps
