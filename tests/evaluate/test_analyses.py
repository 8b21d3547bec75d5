"""The paper's analyses (manipulation, knowledge neurons, scores, class structure) against oracles.

Oracles here never use pathprune.engine or pathprune.analyses internals: the manipulated forward is
replayed block by block by hand, the knowledge-neuron integrated gradients come from a plain
per-image, per-node autograd loop, and path similarities from Python sets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pathprune.attribution import PATH_METHODS, baselines, interventions
from pathprune.evaluate import paper as analyses
from pathprune.attribution import NeuronPathSearch, PathConfig, quadrature_nodes
from pathprune.models import token_range

from conftest import cli_model_args, make_folder, make_tiny

DIGITS_READY = (Path(__file__).resolve().parents[2] / "pathprune" / "assets" / "digits.safetensors").exists()


# --------------------------------------------------------------------------------------------
# the manipulated forward


def replay_forward(model, images, path, factor, t0, t1):
    """timm ViT forward written out block by block, path entries multiplied by hand."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.norm_pre(model.patch_drop(x))
    for layer, blk in enumerate(model.blocks):
        x = x + blk.ls1(blk.attn(blk.norm1(x)))
        h = blk.mlp.act(blk.mlp.fc1(blk.norm2(x))).clone()
        for b in range(h.shape[0]):
            for j in path[layer][b].tolist():
                h[b, t0:t1, j] = h[b, t0:t1, j] * factor
        x = x + blk.ls2(blk.mlp.fc2(blk.mlp.norm(h)))
    return model.forward_head(model.norm(x))


@pytest.mark.parametrize("scope,factor,k", [("cls", 0.0, 1), ("cls", 2.0, 2), ("all", 0.0, 1), ("patches", 2.0, 3)])
def test_manipulated_forward_matches_hand_replay(scope, factor, k):
    model, _ = make_tiny(seed=1, depth=3)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t0, t1 = token_range(model, scope)
    gen = torch.Generator().manual_seed(3)
    path = baselines.random_path([m.fc2.in_features for m in (b.mlp for b in model.blocks)], 4, k, gen)
    with torch.no_grad():
        plain = model(images)
        assert torch.allclose(replay_forward(model, images, path, 1.0, t0, t1), plain, atol=1e-5)
        expected = replay_forward(model, images, path, factor, t0, t1)
    got = interventions.manipulated_logits(model, images, path, factor, t0, t1)
    assert not torch.allclose(expected, plain, atol=1e-3)  # the edit matters
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(model(images), plain)  # hooks are gone afterwards


def test_random_path_is_seeded_distinct_and_in_range():
    widths = [12, 7, 9]
    a = baselines.random_path(widths, 5, 3, torch.Generator().manual_seed(4))
    b = baselines.random_path(widths, 5, 3, torch.Generator().manual_seed(4))
    c = baselines.random_path(widths, 5, 3, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    for ids, width in zip(a, widths):
        assert ids.shape == (5, 3) and int(ids.max()) < width and int(ids.min()) >= 0
        assert all(len(set(row.tolist())) == 3 for row in ids)


# --------------------------------------------------------------------------------------------
# knowledge neurons


def oracle_layer_ig(model, image, target, layer, t0, t1, alphas, weights):
    """IG of every neuron of `layer` (summed over tokens [t0, t1)) scaling only that whole layer."""
    clean = {}
    hook = model.blocks[layer].mlp.fc2.register_forward_pre_hook(
        lambda mod, args: clean.__setitem__("a", args[0][0, t0:t1].detach().clone()))
    with torch.no_grad():
        model(image[None])
    hook.remove()
    a = clean["a"]
    total = torch.zeros_like(a)
    for alpha, w in zip(alphas.tolist(), weights.tolist()):
        leaf = (alpha * a).clone().requires_grad_(True)

        def replace(mod, args):
            h = args[0].clone()
            h[0, t0:t1] = leaf
            return (h,)

        handle = model.blocks[layer].mlp.fc2.register_forward_pre_hook(replace)
        try:
            prob = model(image[None]).softmax(-1)[0, target]
            (g,) = torch.autograd.grad(prob, leaf)
        finally:
            handle.remove()
        total += w * g
    return (a * total).sum(0)


@pytest.mark.parametrize("scope", ["cls", "all"])
def test_knowledge_neurons_match_per_layer_integrated_gradients(scope):
    model, _ = make_tiny(seed=2)
    model.requires_grad_(False)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2])
    config = PathConfig(steps=4, quadrature="gauss", token=scope)
    search = NeuronPathSearch(model, config)
    cp = search.prepare(images, labels)
    path = baselines.knowledge_path(search, cp, k=1)
    alphas, weights = quadrature_nodes("gauss", 4)
    t0, t1 = token_range(model, scope)
    for layer in range(len(model.blocks)):
        got = baselines.knowledge_attributions(search, cp, layer)
        for b in range(2):
            expected = oracle_layer_ig(model, images[b], int(labels[b]), layer, t0, t1, alphas, weights)
            assert torch.allclose(got[b], expected, atol=1e-6, rtol=1e-4)
            assert int(path[layer][b, 0]) == int(expected.argmax())


# --------------------------------------------------------------------------------------------
# summaries and class structure


def test_jaccard_and_class_similarity_match_sets():
    widths = [4, 4]
    records = [{"label": 0, "path": [[0], [1]]}, {"label": 0, "path": [[0], [2]]},
               {"label": 1, "path": [[3], [2]]}, {"label": 1, "path": [[3], [2]]}]
    sets = [{(layer, j) for layer, ids in enumerate(r["path"]) for j in ids} for r in records]
    sim = analyses.pairwise_jaccard(analyses.path_incidence([r["path"] for r in records], widths))
    for i in range(4):
        for j in range(4):
            assert math.isclose(float(sim[i, j]), len(sets[i] & sets[j]) / len(sets[i] | sets[j]), abs_tol=1e-6)
    result = analyses.class_similarity(sim, [r["label"] for r in records], 2)
    # within: pairs (0,1)=1/3 and (2,3)=1; between: (0,2)=0,(0,3)=0,(1,2)=1/3,(1,3)=1/3
    assert math.isclose(result["within_class"], (1 / 3 + 1) / 2, abs_tol=1e-6)
    assert math.isclose(result["between_class"], (2 / 3) / 4, abs_tol=1e-6)
    assert math.isclose(result["matrix"][0][0], 1 / 3, abs_tol=1e-6)
    maps = analyses.frequency_maps(records, "path", widths, 2)
    assert maps[0][0].tolist() == [1.0, 0, 0, 0] and maps[1][0].tolist() == [0, 0.5, 0.5, 0]


def test_manipulation_summary_uses_relative_deviation():
    rows = [{"prob_before": 0.5, "correct_before": True, "methods": {
                "jas": {"remove": {"prob_after": 0.1, "correct_after": False}},
                "random": {"remove": {"prob_after": 0.4, "correct_after": True}}}},
            {"prob_before": 0.2, "correct_before": False, "methods": {
                "jas": {"remove": {"prob_after": 0.2, "correct_after": False}},
                "random": {"remove": {"prob_after": 0.1, "correct_after": False}}}}]
    s = analyses.summarize_manipulation(rows, ["jas", "random"], ["remove"])
    jas = s["by_method"]["jas"]["remove"]
    assert math.isclose(jas["mean_relative_prob_deviation"], (-0.8 + 0.0) / 2)
    assert math.isclose(jas["mean_abs_prob_deviation"], (-0.4 + 0.0) / 2)
    assert math.isclose(jas["accuracy_deviation"], 0.0 - 0.5)
    comp = s["jas_vs"]["random"]["remove"]
    assert comp["jas_stronger_on_average"] and comp["fraction_images_jas_stronger"] == 0.5


# --------------------------------------------------------------------------------------------
# the commands, end to end


def _check_comparison(out: Path, name: str, analysis: Path, methods: list[str], ops: list[str]) -> dict:
    data = json.loads((out / f"{name}.json").read_text())
    records = [json.loads(line) for line in (analysis / "paths.jsonl").read_text().splitlines()]
    rows = data["images"]
    assert (out / f"{name}.md").read_text().startswith(f"# pathprune {name}")
    assert len(rows) == len(data["images"]) and rows
    by_file = {r["file"]: r for r in records}
    for row in rows:
        record = by_file[row["file"]]
        assert set(row["methods"]) == set(methods)
        assert math.isclose(row["prob_before"], record["prob"], rel_tol=1e-4, abs_tol=1e-6)
        assert row["methods"]["jas"]["path"] == record["path"]
        # the final JAS recomputed here equals the analysis' own
        assert math.isclose(row["methods"]["jas"]["path_jas"], record["path_jas"], rel_tol=1e-3, abs_tol=1e-6)
        if "activation" in methods:
            assert row["methods"]["activation"]["path"] == record["act_path"]
        for op in ops:
            assert 0.0 <= row["methods"]["jas"][op]["prob_after"] <= 1.0
    if ops:
        assert (out / "manipulation_probability.png").stat().st_size > 0
        assert set(data["summary"]["manipulation"]["by_method"]) == set(methods)
    assert sorted(data["summary"]["scores"]["ranking"]) == sorted(methods)
    return data


def test_commands_end_to_end_on_a_tiny_vit(tmp_path, run_cli, tiny_weights):
    folder = make_folder(tmp_path / "images", broken=False)
    model = cli_model_args(tiny_weights)
    analysis = tmp_path / "analysis"
    res = run_cli(["analyze", *model, "--data", folder.root, "--out", analysis, "--steps", "3",
                   "--images-per-class", "2", "--batch-size", "6", "--quiet", "--workers", "0"])
    assert res.code == 0, res.output
    out = tmp_path / "manip"
    res = run_cli(["manipulate", *model, "--paths", analysis, "--out", out, "--batch-size", "3",
                   "--max-images", "5", "--quiet"])
    assert res.code == 0, res.output
    data = _check_comparison(out, "manipulate", analysis, PATH_METHODS.names(), ["remove", "enhance"])
    assert len(data["images"]) == 5

    res = run_cli(["scores", *model, "--paths", analysis, "--data", folder.root, "--out", tmp_path / "scores",
                   "--methods", "jas,knowledge", "--quiet"])
    assert res.code == 0, res.output
    _check_comparison(tmp_path / "scores", "scores", analysis, ["jas", "knowledge"], [])

    res = run_cli(["structure", "--paths", analysis, "--out", tmp_path / "structure"])
    assert res.code == 0, res.output
    data = json.loads((tmp_path / "structure" / "structure.json").read_text())
    matrix = np.array(data["summary"]["path"]["matrix"], dtype=float)
    assert matrix.shape == (3, 3) and np.all((matrix >= 0) & (matrix <= 1))
    assert (tmp_path / "structure" / "frequency_path.png").exists()
    # the maps recomputed from the records equal the analysis' own per-class counts
    records = [json.loads(line) for line in (analysis / "paths.jsonl").read_text().splitlines()]
    from_stats = analyses.frequency_maps_from_stats(analysis / "stats.safetensors")
    for layer, saved in enumerate(data["frequency_maps"]["path"]):
        assert torch.allclose(torch.tensor(saved), from_stats[layer], atol=1e-6)
    assert len(records) == 6
    assert (tmp_path / "structure" / "similarity_act_path.png").exists()

    # bad input: one-line errors, nothing written
    other = make_tiny(seed=5)[0]
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    res = run_cli(["manipulate", *cli_model_args(tmp_path / "other.safetensors"), "--paths", analysis,
                   "--out", tmp_path / "bad", "--quiet"])
    assert res.code == 2 and "differ from the model" in res.err and not (tmp_path / "bad").exists()
    res = run_cli(["manipulate", *model, "--paths", analysis, "--out", tmp_path / "bad", "--ops", "twist"])
    assert res.code == 2 and "--ops 'twist'" in res.err


@pytest.mark.slow  # end-to-end analysis commands on digits
@pytest.mark.skipif(not DIGITS_READY, reason="embedded digits model not built yet")
def test_commands_end_to_end_on_digits(tmp_path, run_cli):
    train, test = tmp_path / "train", tmp_path / "test"
    for split, out, n in (("train", train, "3"), ("test", test, "2")):
        res = run_cli(["analyze", "--model", "digits", "--data", f"digits:{split}", "--out", out,
                       "--images-per-class", n, "--steps", "4", "--quiet"])
        assert res.code == 0, res.output
    res = run_cli(["manipulate", "--model", "digits", "--paths", test, "--data", "digits:test",
                   "--out", tmp_path / "manip", "--quiet"])
    assert res.code == 0, res.output
    data = _check_comparison(tmp_path / "manip", "manipulate", test, PATH_METHODS.names(), ["remove", "enhance"])
    assert len(data["images"]) == 20
    res = run_cli(["manipulate", "--model", "digits", "--paths", test, "--data", "digits:train",
                   "--out", tmp_path / "wrong", "--quiet"])
    assert res.code == 2 and not (tmp_path / "wrong").exists()
    res = run_cli(["structure", "--paths", train, "--out", tmp_path / "structure"])
    assert res.code == 0, res.output
    data = json.loads((tmp_path / "structure" / "structure.json").read_text())
    assert len(data["summary"]["path"]["matrix"]) == 10


def test_help_of_every_command(run_cli):
    for command in ("manipulate", "scores", "structure"):
        res = run_cli([command, "--help"])
        assert res.code == 0 and "--paths" in res.out and "--out" in res.out


def test_score_ranking_shares_ranks_on_ties():
    rows = [{"methods": {"jas": {"path_jas": 0.5}, "knowledge": {"path_jas": 0.5}, "random": {"path_jas": 0.1}}},
            {"methods": {"jas": {"path_jas": 0.4}, "knowledge": {"path_jas": 0.2}, "random": {"path_jas": 0.3}}}]
    s = analyses.summarize_scores(rows, ["jas", "knowledge", "random"])
    assert s["ranking"] == ["jas", "knowledge", "random"]
    assert s["fraction_ranked_first"] == {"jas": 1.0, "knowledge": 0.5, "random": 0.0}
    assert s["mean_rank"] == {"jas": 1.0, "knowledge": 2.0, "random": 2.5}


def test_markdown_table_formats_cells():
    from pathprune.evaluate.report import write_markdown_table

    text = write_markdown_table([{"a": 0.123456, "b": True, "c": None, "d": "x|y"}, {"a": float("nan"), "b": False}],
                                ["a", ("b", "B!"), "c", "d"])
    assert text.splitlines() == ["| a | B! | c | d |", "|---|---|---|---|",
                                 "| 0.1235 | yes | - | x\\|y |", "| - | no | - | - |"]
