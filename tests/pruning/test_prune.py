"""`pathprune prune`: real removal equals masking, bias compensation, rebuild, sizes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_ARGS, cli_model_args, forward_with_hooks, tiny_workspace

WIDTH = int(TINY_ARGS["embed_dim"] * TINY_ARGS["mlp_ratio"])  # 48 neurons per block
DIM = TINY_ARGS["embed_dim"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Tiny random ViT weights, an ImageFolder (3 classes x 4) and an analyze run of it."""
    from pathprune.cli import main

    root = tmp_path_factory.mktemp("prune")
    workspace = tiny_workspace(root)
    weights = workspace["weights"]
    analysis = root / "analysis"
    _main(main, ["analyze", *cli_model_args(weights), "--data", str(workspace["data"]), "--out", str(analysis),
                 "--steps", "2", "--batch-size", "6", "--workers", "0", "--quiet"])
    return {"root": root, "data": workspace["data"], "weights": weights, "analysis": analysis}


def _main(main, args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"pathprune {args[0]} failed"


def _dense(setup):
    from pathprune.models import create_model

    return create_model("vit_tiny_patch16_224", str(setup["weights"]), img_size=32, num_classes=3,
                        model_args=dict(TINY_ARGS))[0]


def _inputs(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _masked_logits(model, x, kept, replace=None):
    """Dense logits with every neuron not in kept[l] set to 0 (or replace[l]) at all tokens."""
    handles = []
    for layer, block in enumerate(model.blocks):
        removed = torch.ones(block.mlp.fc2.in_features, dtype=torch.bool)
        removed[list(kept[layer])] = False

        def hook(module, args, removed=removed, layer=layer):
            h = args[0].clone()
            h[..., removed] = 0.0 if replace is None else replace[layer][removed].to(h)
            return (h,)
        handles.append(block.mlp.fc2.register_forward_pre_hook(hook))
    return forward_with_hooks(model, x, handles)


def _prune(run_cli, setup, out, *extra):
    result = run_cli(["prune", *cli_model_args(setup["weights"]), "--out", out, "--quiet", *extra])
    assert result.code == 0, result.output
    return json.loads((Path(out) / "model.json").read_text()), json.loads((Path(out) / "report.json").read_text())


def test_pruned_equals_dense_with_removed_neurons_zeroed(run_cli, setup, tmp_path):
    from pathprune.models import load_pruned

    out = tmp_path / "pruned"
    desc, report = _prune(run_cli, setup, out, "--paths", setup["analysis"], "--ratio", "0.5")
    assert desc["mlp_hidden"] == [WIDTH // 2] * 2 == report["mlp_hidden_after"]
    assert all(len(k) == WIDTH // 2 and k == sorted(k) for k in desc["kept"])
    assert desc["method"] == "path" and desc["ratio"] == 0.5 and desc["compensate"] is False
    assert desc["source"]["analysis"] == str(setup["analysis"])
    pruned, spec = load_pruned(out)
    x = _inputs()
    expected = _masked_logits(_dense(setup), x, desc["kept"])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)
    assert spec.mlp_hidden == [WIDTH // 2] * 2
    # the kept neurons are the highest path importance of each block
    from pathprune.analysis import load_analysis
    from pathprune.pruning.importance import path_importance

    scores = path_importance(load_analysis(setup["analysis"]), "path")
    for layer in range(2):
        assert set(desc["kept"][layer]) == set(torch.topk(scores[layer], WIDTH // 2).indices.tolist())


def test_compensation_replaces_removed_by_their_mean(run_cli, setup, tmp_path):
    from pathprune.data.images import open_images
    from pathprune.models import load_pruned

    out = tmp_path / "comp"
    desc, _ = _prune(run_cli, setup, out, "--importance", "magnitude", "--ratio", "0.6", "--compensate",
                     "--calib-data", setup["data"], "--calib-images", "100")
    dense = _dense(setup)
    # independent mean activation: every calibration image, every token
    images = open_images(str(setup["data"]), _spec_pre(setup))
    batch = torch.stack([images.loader(i) for i in range(len(images.items))])
    acts = []
    handles = [b.mlp.fc2.register_forward_pre_hook(lambda m, a: acts.append(a[0].reshape(-1, a[0].shape[-1])))
               for b in dense.blocks]
    with torch.no_grad():
        dense(batch)
    for h in handles:
        h.remove()
    means = [a.double().mean(0) for a in acts]
    x = _inputs()
    pruned, _ = load_pruned(out)
    with torch.no_grad():
        got = pruned(x)
    torch.testing.assert_close(got, _masked_logits(dense, x, desc["kept"], means), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, _masked_logits(dense, x, desc["kept"]), atol=1e-3)


def _spec_pre(setup):
    from pathprune.models import create_model

    return create_model("vit_tiny_patch16_224", str(setup["weights"]), img_size=32, num_classes=3,
                        model_args=dict(TINY_ARGS))[1].preprocessing


def test_rebuild_from_directory_is_identical_and_sizes_are_as_requested(setup, tmp_path):
    from pathprune.models import load_pruned
    from pathprune.pruning.run import prune
    from pathprune.pruning import PruneConfig

    model = _dense(setup)
    dense_params = sum(p.numel() for p in model.parameters())
    from pathprune.models import create_model

    spec = create_model("vit_tiny_patch16_224", str(setup["weights"]), img_size=32, num_classes=3,
                        model_args=dict(TINY_ARGS))[1]
    report = prune(model, spec, PruneConfig(method="random", ratio=0.3, options={"seed": 3}), tmp_path / "r")
    keep = round(WIDTH * 0.7)
    assert report["mlp_hidden_after"] == [keep, keep]
    # each removed neuron takes one fc1 row (DIM weights + 1 bias) and one fc2 column (DIM weights)
    expected = dense_params - 2 * (WIDTH - keep) * (2 * DIM + 1)
    assert report["params_before"] == dense_params
    assert report["params_after"] == expected == sum(p.numel() for p in model.parameters())
    assert report["macs_after"] < report["macs_before"]
    rebuilt, _ = load_pruned(tmp_path / "r")
    assert sum(p.numel() for p in rebuilt.parameters()) == expected
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    # only the MLPs changed
    assert [b.attn.qkv.weight.shape for b in rebuilt.blocks] == [b.attn.qkv.weight.shape for b in _dense(setup).blocks]


def test_global_scope_and_min_per_layer(setup, tmp_path):
    from pathprune.pruning import select_kept

    scores = [torch.arange(10.0), torch.arange(10.0) + 100]
    kept = select_kept(scores, 0.5, "global", min_per_layer=0.2)
    assert [len(k) for k in kept] == [2, 8]
    assert kept[0].tolist() == [8, 9] and kept[1].tolist() == list(range(2, 10))
    assert [len(k) for k in select_kept(scores, 0.5, "global", min_per_layer=4)] == [4, 6]
    assert [len(k) for k in select_kept(scores, 0.5, "uniform")] == [5, 5]


def test_activation_importance_and_seeded_random(setup, tmp_path):
    from pathprune.data.images import open_images
    from pathprune.pruning import calibration_statistics, create_importance

    dense = _dense(setup)
    images = open_images(str(setup["data"]), _spec_pre(setup))
    stats = calibration_statistics(dense, images, batch_size=5)
    acts = []
    handles = [b.mlp.fc2.register_forward_pre_hook(lambda m, a: acts.append(a[0])) for b in dense.blocks]
    with torch.no_grad():
        dense(torch.stack([images.loader(i) for i in range(len(images.items))]))
    for h in handles:
        h.remove()
    scores = create_importance("activation").fit(dense, statistics=stats).neuron_scores()
    for layer in range(2):
        torch.testing.assert_close(scores[layer], acts[layer].abs().double().mean((0, 1)), rtol=1e-6, atol=1e-9)
    r1 = create_importance("random", seed=5).fit(dense).neuron_scores()
    r2 = create_importance("random", seed=5).fit(dense).neuron_scores()
    r3 = create_importance("random", seed=6).fit(dense).neuron_scores()
    assert all(torch.equal(a, b) for a, b in zip(r1, r2)) and not torch.equal(r1[0], r3[0])


def test_magnitude_ranks_by_fc1_row_and_fc2_column_norms(setup):
    from pathprune.pruning import MagnitudeImportance

    dense = _dense(setup)
    scores = MagnitudeImportance().fit(dense).neuron_scores()
    for layer, block in enumerate(dense.blocks):
        own = block.mlp.fc1.weight.pow(2).sum(1) + block.mlp.fc2.weight.pow(2).sum(0)
        assert torch.equal(torch.argsort(scores[layer]), torch.argsort(own.double().detach()))


def test_taylor_runs_and_prunes(run_cli, setup, tmp_path):
    desc, report = _prune(run_cli, setup, tmp_path / "t", "--importance", "taylor", "--ratio", "0.25",
                          "--calib-data", setup["data"], "--scope", "global", "--min-per-layer", "0.5",
                          "--eval-data", setup["data"])
    assert sum(report["mlp_hidden_after"]) == round(2 * WIDTH * 0.75)
    assert min(report["mlp_hidden_after"]) >= WIDTH // 2
    assert report["top1_before"] is not None and report["top1_deviation"] == pytest.approx(
        report["top1_after"] - report["top1_before"])


def test_prune_a_pruned_model_again_and_analyze_it(run_cli, setup, tmp_path):
    from pathprune.models import load_pruned

    first = tmp_path / "p1"
    desc1, _ = _prune(run_cli, setup, first, "--importance", "magnitude", "--ratio", "0.5")
    analysis2 = tmp_path / "a2"
    res = run_cli(["analyze", "--model", first, "--data", setup["data"], "--out", analysis2, "--steps", "2", "--workers", "0", "--quiet"])
    assert res.code == 0, res.output
    second = tmp_path / "p2"
    res = run_cli(["prune", "--model", first, "--paths", analysis2, "--ratio", "0.5", "--out", second, "--quiet"])
    assert res.code == 0, res.output
    desc2 = json.loads((second / "model.json").read_text())
    assert desc2["mlp_hidden"] == [WIDTH // 4] * 2
    for k1, k2 in zip(desc1["kept"], desc2["kept"]):
        assert set(k2) <= set(k1) and len(k2) == WIDTH // 4
    pruned, _ = load_pruned(second)
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), _masked_logits(_dense(setup), x, desc2["kept"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case,args,message", [
    ("ratio0", ["--paths", "{analysis}", "--ratio", "0"], "--ratio"),
    ("ratio1", ["--paths", "{analysis}", "--ratio", "1.5"], "--ratio"),
    ("method", ["--paths", "{analysis}", "--ratio", "0.5", "--importance", "bogus"], "unknown importance"),
    ("nopaths", ["--ratio", "0.5"], "needs --paths"),
    ("nocalib", ["--importance", "taylor", "--ratio", "0.5"], "calib"),
    ("arch", ["--paths", "{analysis}", "--ratio", "0.5", "MODEL:depth=3"], "different architecture"),
    ("unwritable", ["--paths", "{analysis}", "--ratio", "0.5", "OUT:{blocker}/sub/out"], "cannot write"),
])
def test_bad_input_is_one_line_error_and_leaves_nothing(run_cli, setup, tmp_path, case, args, message):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = tmp_path / "out"
    model_args = cli_model_args(setup["weights"])
    final = []
    for a in args:
        a = a.format(analysis=setup["analysis"], blocker=blocker)
        if a.startswith("MODEL:"):
            model_args = cli_model_args(setup["weights"], depth=3)
            model_args[model_args.index("--weights") + 1] = "random"
        elif a.startswith("OUT:"):
            out = Path(a[4:])
        else:
            final.append(a)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(["prune", *model_args, *final, "--out", out, "--quiet"])
    assert result.code == 2, result.output
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary directory left either


def test_failure_during_save_leaves_no_directory(setup, tmp_path, monkeypatch):
    import pathprune as pp

    from pathprune.models import create_model

    model, spec = create_model("vit_tiny_patch16_224", str(setup["weights"]), img_size=32, num_classes=3,
                               model_args=dict(TINY_ARGS))

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        pp.prune(model, spec, pp.PruneConfig(method="random", ratio=0.5), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


DIGITS = Path(__file__).resolve().parents[2] / "pathprune" / "assets" / "digits.safetensors"


@pytest.mark.skipif(not DIGITS.exists(), reason="embedded digits model not present")
def test_digits_pruned_directory_rebuilds_and_analyzes(run_cli, tmp_path):
    from pathprune.models import create_model

    out = tmp_path / "dp"
    res = run_cli(["prune", "--model", "digits", "--importance", "activation", "--calib-data", "digits:train",
                   "--calib-images", "50", "--ratio", "0.5", "--compensate", "--eval-data", "digits:test",
                   "--out", out, "--quiet"])
    assert res.code == 0, res.output
    model, spec = create_model(str(out))
    assert spec.preprocessing["kind"] == "digits"
    report = json.loads((out / "report.json").read_text())
    assert spec.mlp_hidden == report["mlp_hidden_after"]
    res = run_cli(["analyze", "--model", out, "--data", "digits:test", "--max-images", "6", "--steps", "2",
                   "--out", tmp_path / "a", "--quiet"])
    assert res.code == 0, res.output
