"""Attention heads: removal equals masking, head importance against independent computations, the
pruned-model format with per-block head counts (timm entrypoint), re-pruning, export, errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import forward_with_hooks, make_tiny

HEADS = 4  # the tiny ViT with 4 heads of dimension 6


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, spec = make_tiny(seed=3, num_heads=HEADS)
    return model, spec


def _x(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _labels(n: int = 5) -> torch.Tensor:
    return torch.arange(n) % 3


def _masked(model, x, mask_per_block):
    """Logits with every block's head outputs (proj input columns) multiplied by mask[l][h] (independent
    of pathprune's hooks: the columns are sliced here by hand)."""
    handles = []
    for layer, block in enumerate(model.blocks):
        dh = block.attn.head_dim
        scale = torch.repeat_interleave(torch.as_tensor(mask_per_block[layer], dtype=torch.float64), dh)

        def hook(module, args, scale=scale):
            return (args[0] * scale.to(args[0]),)
        handles.append(block.attn.proj.register_forward_pre_hook(hook))
    return forward_with_hooks(model, x, handles)


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_removing_heads_equals_zeroing_their_outputs(tiny, scope):
    from pathprune.pruning.heads import MagnitudeHeadImportance, prune_heads

    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_heads(model, MagnitudeHeadImportance().fit(model), 0.5, scope=scope)
    assert all(len(k) >= 1 for k in result.kept)
    assert sum(len(k) for k in result.kept) == 4  # half of 2 x 4
    if scope == "uniform":
        assert [len(k) for k in result.kept] == [2, 2]
    masks = [[1.0 if h in keep else 0.0 for h in range(HEADS)] for keep in result.kept]
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), _masked(model, x, masks), rtol=1e-5, atol=1e-5)
    pruned_attn = result.model.blocks[0].attn
    assert pruned_attn.qkv.out_features == 3 * 6 * len(result.kept[0]) == 3 * pruned_attn.proj.in_features
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # caller's model untouched


def test_every_block_keeps_one_head_at_extreme_ratios(tiny):
    from pathprune.pruning.heads import RandomHeadImportance, prune_heads

    model, _ = tiny
    for scope in ("uniform", "global"):
        result = prune_heads(model, RandomHeadImportance(seed=1).fit(model), 0.99, scope=scope)
        assert [len(k) for k in result.kept] == [1, 1]


def test_magnitude_is_the_squared_norm_of_the_heads_parameters(tiny):
    from pathprune.pruning.heads import MagnitudeHeadImportance

    model, _ = tiny
    scores = MagnitudeHeadImportance().fit(model).head_scores()
    for layer, block in enumerate(model.blocks):
        w = block.attn.qkv.weight.detach().double().reshape(3, HEADS, 6, -1)
        b = block.attn.qkv.bias.detach().double().reshape(3, HEADS, 6)
        p = block.attn.proj.weight.detach().double().reshape(-1, HEADS, 6)
        expected = [float((w[:, h] ** 2).sum() + (b[:, h] ** 2).sum() + (p[:, h] ** 2).sum()) for h in range(HEADS)]
        torch.testing.assert_close(scores[layer], torch.tensor(expected, dtype=torch.float64))


def test_taylor_matches_finite_differences_of_the_loss(tiny):
    """score[l][h] = mean over images |d loss_b / d mask_h|, checked by central differences per image."""
    from pathprune.pruning.heads import TaylorHeadImportance

    model = __import__("copy").deepcopy(tiny[0]).double()
    x, y = _x(4).double(), _labels(4)
    scores = TaylorHeadImportance().fit(model, (x, y), batch_size=3).head_scores()
    eps = 1e-4
    for layer in range(2):
        for h in range(HEADS):
            per_image = []
            for b in range(4):
                losses = []
                for sign in (1, -1):
                    masks = [[1.0] * HEADS for _ in range(2)]
                    masks[layer][h] = 1 + sign * eps
                    logits = _masked(model, x[b:b + 1], masks)
                    losses.append(torch.nn.functional.cross_entropy(logits, y[b:b + 1], reduction="sum"))
                per_image.append(abs(float(losses[0] - losses[1]) / (2 * eps)))
            assert scores[layer][h] == pytest.approx(sum(per_image) / 4, rel=1e-4, abs=1e-8)


def test_activation_is_the_mean_norm_of_the_heads_contribution(tiny):
    from pathprune.pruning.heads import ActivationHeadImportance

    model, _ = tiny
    x, y = _x(3), _labels(3)
    scores = ActivationHeadImportance().fit(model, (x, y), batch_size=2).head_scores()
    inputs = []
    handles = [b.attn.proj.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for layer, z in enumerate(inputs):
        w = model.blocks[layer].attn.proj.weight.detach()
        for h in range(HEADS):
            contrib = z[..., h * 6:(h + 1) * 6] @ w[:, h * 6:(h + 1) * 6].T
            assert float(scores[layer][h]) == pytest.approx(float(contrib.norm(dim=-1).mean()), rel=1e-4)


def test_torch_pruning_protocol_gives_each_channel_its_heads_score(tiny):
    import torch_pruning as tp

    from pathprune.models import dependency_graph
    from pathprune.pruning.heads import RandomHeadImportance

    model, _ = tiny
    imp = RandomHeadImportance(seed=2).fit(model)
    graph = dependency_graph(model)
    proj = model.blocks[1].attn.proj
    group = graph.get_pruning_group(proj, tp.prune_linear_in_channels, idxs=list(range(24)))
    got = imp(group)
    assert torch.equal(got, imp.scores[1].float().repeat_interleave(6))
    fc1 = model.blocks[0].mlp.fc1
    assert imp(graph.get_pruning_group(fc1, tp.prune_linear_out_channels, idxs=[0, 1])) is None


def test_prune_run_writes_format_2_that_timm_and_create_model_rebuild(tiny, tmp_path):
    import timm

    from pathprune.models import create_model
    from pathprune.pruning.run import prune
    from pathprune.pruning import PruneConfig

    model, spec = tiny
    work = __import__("copy").deepcopy(model)
    out = tmp_path / "p"
    report = prune(work, spec, PruneConfig(method="magnitude", ratio=0.25, heads_ratio=0.5), out)
    desc = json.loads((out / "model.json").read_text())
    assert desc["format"] == "pathprune.model/2" and desc["num_heads"] == [2, 2] == report["heads_after"]
    assert report["heads_removed"] == 4 and desc["heads_method"] == "magnitude"
    rebuilt, rspec = create_model(str(out))
    assert rspec.num_heads == [2, 2] and rspec.architecture["num_heads"] == [2, 2]
    via_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), work(x), rtol=0, atol=0)
        torch.testing.assert_close(via_timm(x), work(x), rtol=0, atol=0)
    # the heads kept are those of the dense model; masking them there (and the neurons) gives the logits
    masks = [[1.0 if h in keep else 0.0 for h in range(HEADS)] for keep in desc["kept_heads"]]
    handles = []
    for layer, block in enumerate(model.blocks):
        removed = torch.ones(block.mlp.fc2.in_features, dtype=torch.bool)
        removed[desc["kept"][layer]] = False
        handles.append(block.mlp.fc2.register_forward_pre_hook(
            lambda m, a, removed=removed: (a[0].masked_fill(removed, 0.0),)))
    try:
        torch.testing.assert_close(rebuilt(x).detach(), _masked(model, x, masks), rtol=1e-5, atol=1e-5)
    finally:
        for h in handles:
            h.remove()

    # re-pruning a head-pruned directory composes the kept head indices with the dense model's
    again = tmp_path / "p2"
    prune(rebuilt, rspec, PruneConfig(method="random", ratio=0, heads_ratio=0.5, options={"seed": 4}), again, previous=desc)
    desc2 = json.loads((again / "model.json").read_text())
    assert desc2["num_heads"] == [1, 1]
    assert all(set(k2) <= set(k1) for k1, k2 in zip(desc["kept_heads"], desc2["kept_heads"]))
    assert desc2["mlp_hidden"] == desc["mlp_hidden"] and desc2["kept"] == desc["kept"]

    # an edited description is a one-line ModelError
    from pathprune.errors import ModelError

    for field, value in (("num_heads", [5, 2]), ("kept_heads", [[0, 0], [1, 2]])):
        broken = dict(desc, **{field: value})
        (out / "model.json").write_text(json.dumps(broken))
        with pytest.raises(ModelError, match=field):
            create_model(str(out))


def test_onnx_export_of_a_head_pruned_model_matches_torch(tiny, tmp_path):
    from pathprune.pruning.heads import prune_heads

    pytest.importorskip("onnxruntime")
    from pathprune.deploy.onnx import export_onnx

    model, _ = tiny
    pruned = prune_heads(model, [torch.tensor([4.0, 3, 2, 1]), torch.tensor([1.0, 2, 3, 4])], 0.625,
                         scope="global").model
    counts = [b.attn.num_heads for b in pruned.blocks]
    assert counts == [2, 1]  # the global ranking keeps 3 heads: 4, 3 of block 0 and 4 of block 1
    result = export_onnx(pruned, tmp_path / "m.onnx", exporter="torchscript")
    assert result.max_abs_diff < 1e-4
    import onnx

    result = export_onnx(pruned, tmp_path / "opt.onnx", optimize=True, exporter="torchscript")
    assert result.max_abs_diff < 1e-4
    fused = [n for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node if n.op_type == "Attention"]
    assert [next(a.i for a in n.attribute if a.name == "num_heads") for n in fused] == counts


@pytest.mark.parametrize("config, param", [
    ({"heads_ratio": 1.0}, "heads_ratio"),
    ({"heads_ratio": -0.1}, "heads_ratio"),
    ({"heads_ratio": 0.5, "heads_method": "activation-path"}, "heads_importance"),
    ({"ratio": 0}, "ratio"),
])
def test_bad_head_settings_are_typed_errors(config, param):
    from pathprune.errors import ConfigError
    from pathprune.pruning import PruneConfig

    settings = {"method": "magnitude", "ratio": 0.5, **config}
    with pytest.raises(ConfigError) as err:
        PruneConfig(**settings).validate()
    assert err.value.param == param


def test_path_heads_need_head_statistics_and_other_families_are_refused(tiny):
    import timm

    from pathprune.errors import ConfigError, ModelError
    from pathprune.pruning.heads import create_head_importance, prune_heads

    with pytest.raises(ConfigError):
        create_head_importance("path")
    with pytest.raises(ConfigError) as err:
        create_head_importance("magnitude", seed=3)  # magnitude takes no seed
    assert err.value.param == "seed"
    beit = timm.create_model("beit_base_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8,
                             embed_dim=24, num_heads=2).eval()
    with pytest.raises(ModelError, match="cannot be removed"):
        prune_heads(beit, [torch.ones(2)], 0.5)


def _ridge_oracle(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """[W^T; b] of argmin ||[X 1] w - Y||^2 + lam ||W||^2, lam = ridge * mean diag(X^T X) (numpy lstsq)."""
    import numpy as np

    x = x.reshape(-1, x.shape[-1]).double().numpy()
    y = y.reshape(-1, y.shape[-1]).double().numpy()
    lam = ridge * float((x * x).sum(0).mean())
    a = np.concatenate([x, np.ones((len(x), 1))], 1)
    # ridge as extra rows: sqrt(lam) I for the weights, none for the bias
    reg = np.concatenate([np.sqrt(lam) * np.eye(x.shape[1]), np.zeros((x.shape[1], 1))], 1)
    w = np.linalg.lstsq(np.concatenate([a, reg]), np.concatenate([y, np.zeros((x.shape[1], y.shape[1]))]),
                        rcond=None)[0]
    return torch.from_numpy(w)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0])
def test_reconstruction_refits_proj_on_the_kept_heads(tiny, cache_bytes):
    from pathprune.pruning.heads import RandomHeadImportance, prune_heads
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    model, _ = tiny
    pruned = prune_heads(model, RandomHeadImportance(seed=0).fit(model), 0.5).model
    x, y = _x(6, seed=7), _labels(6)
    # the oracle for block 0, target dense: proj input of the pruned model, attention output of the dense one
    seen = {}
    h1 = pruned.blocks[0].attn.proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
    h2 = model.blocks[0].attn.register_forward_hook(lambda m, a, o: seen.__setitem__("y", o.detach()))
    with torch.no_grad():
        pruned(x)
        model(x)
    h1.remove()
    h2.remove()
    expected = _ridge_oracle(seen["x"], seen["y"], 1e-3)
    r = reconstruct_mlp(pruned, model, (x, y), ReconstructConfig(target="dense"), batch_size=4,
                        cache_bytes=cache_bytes)
    proj = pruned.blocks[0].attn.proj
    torch.testing.assert_close(proj.weight.detach().double().T, expected[:-1].to(torch.float64), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(proj.bias.detach().double(), expected[-1], rtol=1e-4, atol=1e-5)
    assert r.proj_blocks == [0, 1]
    assert all(a < b for a, b in zip(r.proj_error_after, r.proj_error_before))


def test_residual_reconstruction_of_heads_and_neurons_improves_the_logits(tiny):
    from pathprune.pruning import MagnitudeImportance, prune_mlp
    from pathprune.pruning.heads import MagnitudeHeadImportance, prune_heads
    from pathprune.repair.reconstruct import ReconstructConfig, reconstruct_mlp

    model, _ = tiny
    step = prune_mlp(model, MagnitudeImportance().fit(model), 0.5)
    heads = prune_heads(step.model, MagnitudeHeadImportance().fit(step.model), 0.5, inplace=True)
    pruned = heads.model
    calib = (_x(16, seed=11), _labels(16))
    x = _x(8, seed=12)
    with torch.no_grad():
        before = (pruned(x) - model(x)).pow(2).mean()
    for mode in ("sequential", "independent"):
        work = __import__("copy").deepcopy(pruned)
        r = reconstruct_mlp(work, model, calib, ReconstructConfig(mode=mode), kept=step.kept, kept_heads=heads.kept)
        with torch.no_grad():
            after = (work(x) - model(x)).pow(2).mean()
        assert r.proj_blocks == [0, 1] and after < before, mode


@pytest.mark.slow
def test_int8_picks_the_fastest_passing_variant_and_static_int8_keeps_attention_unfused(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from pathprune.deploy.metadata import read_metadata
    from pathprune.deploy.onnx import export_onnx
    from pathprune.deploy.select import export_fastest_int8

    model, _ = tiny
    calib = (_x(8, seed=4), _labels(8))
    result, timings = export_fastest_int8(model, tmp_path / "q.onnx", calibration=calib, optimize=True,
                                          min_agreement=0.0, exporter="torchscript", repeats=3)
    via_export = export_onnx(model, tmp_path / "q2.onnx", precision="int8", optimize=True, calibration=calib,
                             min_agreement=0.0, exporter="torchscript")
    assert via_export.precision in {k.split(" ")[0] for k in timings}
    assert "int8_choice" in read_metadata(str(tmp_path / "q2.onnx"))
    # with optimize, the graphs without the optimiser compete too (optimize never picks a slower file)
    assert set(timings) == {"int8-dynamic", "int8-static", "int8-dynamic (not optimised)", "int8-static (not optimised)"}
    chosen = min(timings, key=timings.get)
    assert result.precision == chosen.split(" ")[0]
    assert result.optimize is ("not optimised" not in chosen)
    choice = read_metadata(str(tmp_path / "q.onnx"))["int8_choice"]
    assert choice["chosen"] == chosen and set(choice["median_ms"]) == set(timings)
    static = export_onnx(model, tmp_path / "s.onnx", optimize=True, precision="int8-static", calibration=calib,
                         min_agreement=0.0, exporter="torchscript")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node}
    assert "Attention" not in ops and static.fused["LayerNorm"] > 0  # other fusions stay


def test_cli_prunes_heads_only_and_refuses_a_bad_heads_ratio(run_cli, tiny_weights, tmp_path):
    from conftest import assert_exit2_one_error_line, cli_model_args

    out = tmp_path / "heads"
    res = run_cli(["prune", *cli_model_args(tiny_weights), "--importance", "magnitude", "--heads-ratio", "0.5",
                   "--out", str(out), "--quiet"])
    assert res.code == 0, res.output
    desc = json.loads((out / "model.json").read_text())
    assert desc["num_heads"] == [1, 1] and desc["mlp_hidden"] == [48, 48] and "removed 2 of 4 attention heads" in res.output
    bad = run_cli(["prune", *cli_model_args(tiny_weights), "--importance", "magnitude", "--heads-ratio", "1.5",
                   "--out", str(tmp_path / "bad"), "--quiet"])
    assert_exit2_one_error_line(bad, "heads-ratio")
    assert not (tmp_path / "bad").exists()


def test_a_heads_ratio_that_removes_nothing_names_heads_before_any_pass(run_cli, tmp_path, monkeypatch):
    import pathprune.pruning.heads as heads

    def no_pass(*args, **kwargs):
        raise AssertionError("a head importance pass ran before the heads ratio was checked")

    monkeypatch.setattr(heads.TaylorHeadImportance, "_scores", no_pass)
    res = run_cli(["prune", "--model", "digits", "--ratio", "0.5", "--importance", "magnitude", "--heads-ratio", "0.01",
                   "--heads-importance", "taylor", "--calib-data", "digits:train", "--out", tmp_path / "p"])
    assert res.code == 2 and res.err.count("error:") == 1, res.output
    assert "--heads-ratio" in res.err and "removes no head" in res.err
    assert "--ratio " not in res.err and "neuron" not in res.err
    assert not (tmp_path / "p").exists()
