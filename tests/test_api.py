"""The public Python API: documented examples run, the caller's objects are left alone, in-memory
aggregation equals the command line's, torch-pruning interoperation, user registrations."""

from __future__ import annotations

import copy
import doctest
import importlib
import json
import pkgutil
import warnings
from pathlib import Path

import pytest
import torch

import pathprune as pp
from pathprune.models import mlp_layouts, model_input_shape

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # runs every docs/api.md example end to end
def test_docs_api_examples_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                                  optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 40 and result.failed == 0


def test_module_docstring_examples_run():
    attempted = 0
    for info in pkgutil.walk_packages(pp.__path__, "pathprune."):
        if info.name.endswith("__main__"):
            continue
        result = doctest.testmod(importlib.import_module(info.name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert doctest.testmod(pp).failed == 0
    assert attempted > 10


def test_public_names_are_exported():
    for name in pp.__all__:
        assert hasattr(pp, name), name


# --------------------------------------------------------------------------------------------
# the caller's model comes back as it was


def model_state(model: torch.nn.Module) -> dict:
    return {"modes": [m.training for m in model.modules()],
            "grads": [p.requires_grad for p in model.parameters()],
            "placement": [(t.device, t.dtype) for t in list(model.parameters()) + list(model.buffers())],
            "values": {k: v.clone() for k, v in model.state_dict().items()},
            "hooks": sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())}


def assert_same_state(before: dict, model: torch.nn.Module) -> None:
    after = model_state(model)
    assert after["modes"] == before["modes"]
    assert after["grads"] == before["grads"]
    assert after["placement"] == before["placement"]
    assert after["hooks"] == before["hooks"]
    assert after["values"].keys() == before["values"].keys()
    for key, value in before["values"].items():
        assert torch.equal(after["values"][key], value), key


@pytest.fixture
def callers_model():
    """The digits model as a caller might hold it: training mode, some parameters frozen."""
    model, spec = pp.create_model("digits")
    model.train()
    model.patch_embed.requires_grad_(False)
    return model, spec


def test_search_leaves_the_model_alone(callers_model):
    model, spec = callers_model
    before = model_state(model)
    images = pp.open_images("digits:test", spec.preprocessing, max_images=6)
    x, y = next(pp.labelled_batches(images, 6))
    search = pp.NeuronPathSearch(model, pp.PathConfig(steps=2, topk=2, token="all"))
    result = search.attribute(x, target=y)
    search.completeness_delta(x, result)
    assert_same_state(before, model)
    # the search ran the model in eval mode: the same paths as on an eval-mode copy
    twin = copy.deepcopy(model).eval()
    again = pp.NeuronPathSearch(twin, pp.PathConfig(steps=2, topk=2, token="all")).attribute(x, target=y)
    assert torch.equal(result.path, again.path)


def test_export_evaluate_prune_and_importances_leave_the_model_alone(callers_model, tmp_path):
    model, spec = callers_model
    model.double()  # export and evaluation run in float32 meanwhile
    before = model_state(model)
    pp.export_onnx(model, tmp_path / "m.onnx")
    test = pp.open_images("digits:test", spec.preprocessing, max_images=40)
    pp.evaluate_models({"m": model}, test)
    calib = pp.open_images("digits:train", spec.preprocessing, max_images=16)
    for name in ("activation", "magnitude", "taylor", "random"):
        importance = pp.create_importance(name).fit(model, calib)
        pp.prune_mlp(model, importance, 0.5)
    pp.calibration_statistics(model, calib)
    assert_same_state(before, model)


@pytest.mark.slow  # a whole bench run
def test_bench_leaves_the_models_alone(tmp_path):
    dense, spec = pp.create_model("digits")
    pruned = pp.prune_mlp(dense, pp.MagnitudeImportance().fit(dense), 0.5).model
    dense.train()
    pruned.double()
    states = [model_state(dense), model_state(pruned)]
    models = [pp.BenchModel("dense", dense, spec, "dense", 0.0),
              pp.BenchModel("pruned", pruned, spec, "pruned", 0.5)]
    settings = pp.BenchSettings(batch_sizes=(2,), warmup=1, repeats=2, backends=("ort-cpu", "torch-cpu"))
    pp.run_bench(models, pp.open_images("digits:test", spec.preprocessing, max_images=20), settings, tmp_path / "b")
    assert_same_state(states[0], dense)
    assert_same_state(states[1], pruned)


# --------------------------------------------------------------------------------------------
# in-memory aggregation = the command line's numbers


def test_in_memory_statistics_equal_the_analyze_directory(run_cli, tmp_path):
    out = tmp_path / "paths"
    result = run_cli(["analyze", "--model", "digits", "--data", "digits:train", "--images-per-class", "3",
                      "--steps", "2", "--topk", "3", "--token", "all", "--batch-size", "7", "--out", out,
                      "--quiet"])
    assert result.code == 0, result.err
    result = run_cli(["prune", "--model", "digits", "--paths", out, "--ratio", "0.6", "--out", tmp_path / "pruned",
                      "--quiet"])
    assert result.code == 0, result.err

    model, spec = pp.create_model("digits")
    images = pp.open_images("digits:train", spec.preprocessing, images_per_class=3)
    search = pp.NeuronPathSearch(model, pp.PathConfig(steps=2, topk=3, token="all"))
    stats = pp.PathStatistics(10, spec.mlp_hidden)
    for x, y in pp.labelled_batches(images, 7):
        stats.add(y, search.attribute(x, target=y))
    in_memory = pp.path_importance(pp.Analysis.from_statistics(stats))
    on_disk = pp.path_importance(pp.load_analysis(out))
    for a, b in zip(in_memory, on_disk):
        assert torch.equal(a, b)
    kept = pp.prune_mlp(model, pp.PathImportance.from_analysis(pp.Analysis.from_statistics(stats)).fit(model),
                        0.6).kept
    assert kept == json.loads((tmp_path / "pruned" / "model.json").read_text())["kept"]


# --------------------------------------------------------------------------------------------
# torch-pruning interoperation and user registrations


def test_metapruner_with_path_importance_equals_prune_mlp():
    import torch_pruning as tp

    from pathprune.models import example_input

    model, spec = pp.create_model("digits")
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(w, generator=gen, dtype=torch.float64) for w in spec.mlp_hidden]
    expected = pp.prune_mlp(model, pp.PathImportance(scores).fit(model), 0.5)

    work = copy.deepcopy(model)
    importance = pp.PathImportance(scores).fit(work)
    fc1 = {id(layout.inputs[0]) for layout in mlp_layouts(work)}
    others = [m for m in work.modules() if isinstance(m, torch.nn.Linear) and id(m) not in fc1]
    tp.pruner.MetaPruner(work, example_input(work), importance=importance, pruning_ratio=0.5,
                         ignored_layers=others, root_module_types=[torch.nn.Linear]).step()
    x = torch.randn(3, *model_input_shape(model))
    with torch.no_grad():
        torch.testing.assert_close(work(x), expected.model(x))
    # for any group that is not an MLP's hidden neurons the importance abstains
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    qkv = model.blocks[0].attn.qkv
    group = graph.get_pruning_group(qkv, tp.prune_linear_out_channels, idxs=[0, 1])
    assert pp.PathImportance(scores).fit(model)(group) is None


def test_a_registered_importance_is_a_command_line_choice(run_cli, tmp_path):
    @pp.register_importance("last-neurons", help="prefers high neuron indices (a test method)")
    class LastNeurons(pp.NeuronImportance):
        def _scores(self, model, calibration, **kwargs):
            return [torch.arange(layout.width, dtype=torch.float64) for layout in mlp_layouts(model)]

    try:
        result = run_cli(["prune", "--model", "digits", "--importance", "last-neurons", "--ratio", "0.75",
                          "--out", tmp_path / "p", "--quiet"])
        assert result.code == 0, result.err
        kept = json.loads((tmp_path / "p" / "model.json").read_text())["kept"]
        assert kept == [list(range(192, 256))] * 6
        help_text = run_cli(["prune", "--help"]).out
        assert "last-neurons" in help_text
    finally:
        pp.IMPORTANCES.unregister("last-neurons")
