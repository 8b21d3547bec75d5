"""The paper-form search that takes only layer l's gradients against the previous full-backward search
(its oracle: the path's gradients at every layer, choice by JAS(P + j)), the statistics format, and
--compile."""

from __future__ import annotations

import json

import pytest
import torch

from pathprune.analysis.statistics import FORMAT, LEGACY_FORMAT, PathStatistics
from pathprune.attribution import NeuronPathSearch, PathConfig
from pathprune.errors import IncompatibleError

from conftest import make_tiny

DEPTH = 3


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=0, depth=DEPTH)[0]


def batch(seed=1, n=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.arange(n) % 3


CASES = [(token, k, max_batch, quad) for token in ("cls", "patches", "all") for k in (1, 3)
         for max_batch, quad in ((None, "gauss"), (5, "midpoint"))]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_layer_only_search_equals_full_backward_search(model, case):
    token, k, max_batch, quad = case
    images, labels = batch()
    config = PathConfig(topk=k, steps=4, quadrature=quad, token=token, max_batch=max_batch, refine_steps=0)
    fast = NeuronPathSearch(model, config).attribute(images, labels)
    full = NeuronPathSearch(model, config, full_backward=True).attribute(images, labels)
    assert torch.equal(fast.path, full.path)
    assert torch.equal(fast.act_path, full.act_path)
    torch.testing.assert_close(fast.path_jas, full.path_jas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.act_path_jas, full.act_path_jas, rtol=1e-5, atol=1e-7)
    for a, b in zip(fast.candidate_jas, full.candidate_jas):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_full_backward_choice_is_argmax_of_jas_of_path_plus_candidate(model):
    """The oracle variant really scores JAS(P + j): recorded marginal + the path's own terms."""
    images, labels = batch(seed=4)
    search = NeuronPathSearch(model, PathConfig(topk=2, steps=4, token="all"), full_backward=True)
    cp = search.prepare(images, labels)
    result = search.attribute(images, labels)
    path = list(result.path.unbind(1))
    grads = search.integrated_gradients(cp.images, cp.target, cp.clean, path[:2], full_layer=2)
    full = search._candidate_scores(cp.clean, path, grads, 2)
    offset = search._path_terms(cp.clean, path, grads, 2)[2]
    torch.testing.assert_close(full, result.candidate_jas[2] + offset[:, None], rtol=1e-5, atol=1e-7)
    assert torch.equal(torch.topk(full, 2, dim=1).indices.sort(1).values, result.path[:, 2].sort(1).values)


@pytest.mark.parametrize("scoring", ["quadrature", "exact"])
def test_backward_stops_at_the_chosen_layer(model, scoring):
    """Paper form: at layer l nothing below block l carries gradients (sum over layers of L - l blocks),
    and blocks below l - 1 are not run again,
    against L blocks per layer for the full-backward variant; the two final scoring passes are full
    (quadrature scoring) or one forward each without gradients (exact scoring)."""
    images, labels = batch()
    counts = {}

    def count(module, args, output):
        counts["run"] = counts.get("run", 0) + 1
        if output.requires_grad:
            counts["n"] = counts.get("n", 0) + 1

    handles = [block.register_forward_hook(count) for block in model.blocks]
    try:
        for full_backward in (False, True):
            counts["n"] = counts["run"] = 0
            NeuronPathSearch(model, PathConfig(steps=2, scoring=scoring, refine_steps=0),
                             full_backward=full_backward).attribute(images, labels)
            counts[full_backward], counts["run", full_backward] = counts["n"], counts["run"]
    finally:
        for handle in handles:
            handle.remove()
    final_passes = 2 * DEPTH  # the path's and the activation path's JAS
    final_grads = final_passes if scoring == "quadrature" else 0
    assert counts[False] == DEPTH * (DEPTH + 1) // 2 + final_grads
    assert counts[True] == DEPTH * DEPTH + final_grads
    # forwards: the layer-l pass resumes at block l - 1 from the block input the previous pass stored
    clean_pass = DEPTH
    assert counts["run", False] == clean_pass + DEPTH + sum(DEPTH - l + 1 for l in range(1, DEPTH)) + final_passes
    assert counts["run", True] == clean_pass + DEPTH * DEPTH + final_passes


def test_reference_form_ignores_the_layer_only_search(model):
    images, labels = batch()
    config = PathConfig(jas="reference", quadrature="riemann", steps=4, token="cls", topk=2)
    a = NeuronPathSearch(model, config).attribute(images, labels)
    b = NeuronPathSearch(model, config, full_backward=True).attribute(images, labels)
    assert torch.equal(a.path, b.path) and torch.equal(a.path_jas, b.path_jas)
    for x, y in zip(a.candidate_jas, b.candidate_jas):
        assert torch.equal(x, y)


# --------------------------------------------------------------------------------------------
# statistics format


def _stats(model, images, labels, **config):
    search = NeuronPathSearch(model, PathConfig(steps=2, **config))
    stats = PathStatistics(3, search.widths)
    stats.add(labels, search.attribute(images, labels))
    return stats


def test_statistics_record_their_format_and_old_files_load(model, tmp_path):
    from safetensors.torch import save_file

    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_importance

    images, labels = batch()
    stats = _stats(model, images, labels)
    assert stats.format == FORMAT == "pathprune.analyze/2"
    stats.save(tmp_path / "stats.safetensors", {"records": 3})
    loaded, meta = PathStatistics.load(tmp_path / "stats.safetensors")
    assert loaded.format == FORMAT and meta == {"records": 3}
    # a format-1 file (no format in its header) still loads, as the legacy format
    old = tmp_path / "old"
    old.mkdir()
    save_file(stats.tensors(), str(old / "stats.safetensors"), {"checkpoint": json.dumps({"records": 3})})
    (old / "run.json").write_text(json.dumps({"format": LEGACY_FORMAT}))
    legacy, _ = PathStatistics.load(old / "stats.safetensors")
    assert legacy.format == LEGACY_FORMAT
    scores = path_importance(load_analysis(old, allow_partial=True))
    assert [len(s) for s in scores] == stats.widths
    with pytest.raises(IncompatibleError, match="formats"):
        stats.merge(legacy)


def test_newer_statistics_format_is_a_clear_error(model, tmp_path):
    from safetensors.torch import save_file

    images, labels = batch()
    stats = _stats(model, images, labels)
    save_file(stats.tensors(), str(tmp_path / "s.safetensors"), {"checkpoint": "{}", "format": "pathprune.analyze/9"})
    with pytest.raises(IncompatibleError, match="newer than this pathprune"):
        PathStatistics.load(tmp_path / "s.safetensors")


def test_per_layer_ranking_ignores_per_image_path_offsets():
    """Why prune's uniform ranking is unchanged by recording a_j IG_j instead of JAS(P) + a_j IG_j:
    each image adds its own offset JAS_b(P) to every candidate of the layer, so the class-balanced
    mean shifts by one constant per layer, whatever the offsets are."""
    from pathprune.pruning.importance import Analysis, path_importance

    gen = torch.Generator().manual_seed(0)
    stats_new, stats_old = PathStatistics(2, [6, 5]), PathStatistics(2, [6, 5])
    labels = torch.tensor([0, 0, 1, 1, 1])
    for stats, with_offsets in ((stats_new, False), (stats_old, True)):
        gen.manual_seed(0)
        for label in labels:
            stats.class_count[label] += 1
            for layer, width in enumerate(stats.widths):
                marginal = torch.randn(width, generator=gen).double()
                offset = torch.rand((), generator=gen).double() * 10
                hit = torch.randint(width, (1,), generator=gen)
                stats.path_count[layer][label, hit] += 1
                stats.jas_sum[layer][label] += marginal + (offset if with_offsets else 0.0)
    for primary in ("count", "dense"):
        new = path_importance(Analysis.from_statistics(stats_new), primary=primary)
        old = path_importance(Analysis.from_statistics(stats_old), primary=primary)
        for a, b in zip(new, old):
            assert torch.equal(a.argsort(descending=True), b.argsort(descending=True))


# --------------------------------------------------------------------------------------------
# --compile


@pytest.mark.slow
def test_compiled_search_equals_uncompiled(model):
    images, labels = batch()
    config = PathConfig(topk=2, steps=3, token="all", max_batch=4)
    plain = NeuronPathSearch(model, config).attribute(images, labels)
    compiled_search = NeuronPathSearch(model, config, compile=True)
    compiled = compiled_search.attribute(images, labels)
    assert torch.equal(plain.path, compiled.path)
    torch.testing.assert_close(plain.path_jas, compiled.path_jas, rtol=1e-4, atol=1e-6)
    for a, b in zip(plain.candidate_jas, compiled.candidate_jas):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the caller's model is given back uncompiled
    assert all(getattr(block.attn, "_compiled_call_impl", None) is None for block in model.blocks)
