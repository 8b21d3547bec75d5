"""Model-family adapters: analyze -> prune -> export on a small random instance of every supported
family and ViT variant, refused families, and the adapter's layout answers.

Every case checks that real removal equals the dense model with the removed neurons zeroed (an
independent masked forward), that the pruned directory rebuilds to identical logits, and that the
ONNX export passes its parity check.
"""

from __future__ import annotations

import pytest
import torch

import pathprune as pp
from pathprune.models import MODEL_FAMILIES, family_of, mlp_input_hooks, mlp_layouts, model_input_shape, token_range

SMALL = dict(depth=2, embed_dim=32, num_heads=2, num_classes=3)

#: (timm name, overrides, family, default token scope, prefix tokens)
CASES = [
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8), "vit", "cls", 1),
    ("vit_base_patch16_224.mae", dict(img_size=32, patch_size=8, global_pool="avg", fc_norm=True), "vit", "patches", 1),
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8), "vit", "cls", 2),
    ("deit3_small_patch16_224", dict(img_size=32, patch_size=8), "vit", "cls", 1),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=7), "vit", "cls", 5),
    ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8), "vit", "patches", 0),
    ("beit_base_patch16_224", dict(img_size=32, patch_size=8), "beit", "patches", 1),
    ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=7), "eva", "patches", 1),
]
IDS = [c[0] for c in CASES]


def build(name: str, overrides: dict):
    model, spec = pp.create_model(name, "random", **SMALL, **overrides)
    from conftest import randomize_

    return randomize_(model, 0), spec


def masked_logits(model, x, kept):
    """Dense logits with every neuron outside `kept` zeroed at every token (independent of pruning)."""
    def zero(keep):
        def fn(hidden):
            mask = torch.zeros(hidden.shape[-1], dtype=hidden.dtype)
            mask[torch.as_tensor(keep)] = 1
            return hidden * mask
        return fn
    with torch.no_grad(), mlp_input_hooks(model, {layer: zero(k) for layer, k in enumerate(kept)}):
        return model(x)


def test_every_registered_family_has_a_case():
    assert {case[2] for case in CASES} == set(MODEL_FAMILIES.names())


@pytest.mark.parametrize("name,overrides,family,scope,prefix", CASES, ids=IDS)
def test_layout_answers(name, overrides, family, scope, prefix):
    model, spec = build(name, overrides)
    assert family_of(model).name == family
    assert spec.token_scope == scope
    patches = (overrides["img_size"] // overrides["patch_size"]) ** 2
    assert token_range(model, "patches") == (prefix, prefix + patches)
    assert token_range(model, "all") == (0, prefix + patches)
    # the hook point sees [B, tokens, neurons]
    seen = []
    with torch.no_grad(), mlp_input_hooks(model, {0: lambda h: seen.append(h.shape)}):
        model(torch.randn(2, *model_input_shape(model)))
    assert seen == [torch.Size([2, prefix + patches, spec.mlp_hidden[0]])]


@pytest.mark.parametrize("name,overrides,family,scope,prefix", CASES, ids=IDS)
def test_analyze_prune_export(name, overrides, family, scope, prefix, tmp_path):
    model, spec = build(name, overrides)
    x = torch.randn(4, *model_input_shape(model), generator=torch.Generator().manual_seed(1))
    result = pp.NeuronPathSearch(model, pp.PathConfig(topk=2, steps=2, token=spec.token_scope)).attribute(x)
    assert result.path.shape == (4, 2, 2)
    stats = pp.PathStatistics(3, spec.mlp_hidden)
    stats.add(result.target, result)
    importance = pp.PathImportance.from_analysis(pp.Analysis.from_statistics(stats)).fit(model)
    pruned = pp.prune_mlp(model, importance, 0.5)
    assert pp.mlp_widths(pruned.model) == [max(1, round(w * 0.5)) for w in spec.mlp_hidden]
    with torch.no_grad():
        torch.testing.assert_close(pruned.model(x), masked_logits(model, x, pruned.kept), rtol=1e-5, atol=1e-5)

    # the pruned-model directory rebuilds to the same logits
    from pathprune.models import save_pruned

    description = {"format": "pathprune.model/1", "base": spec.base, "overrides": spec.overrides,
                   "mlp_hidden": pp.mlp_widths(pruned.model), "preprocessing": spec.preprocessing,
                   "token_scope": spec.token_scope, "weights": "model.safetensors", "kept": pruned.kept}
    save_pruned(tmp_path / "pruned", pruned.model, description, {})
    rebuilt, rebuilt_spec = pp.create_model(str(tmp_path / "pruned"))
    assert rebuilt_spec.mlp_hidden == pp.mlp_widths(pruned.model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned.model(x))
    export = pp.export_onnx(rebuilt, tmp_path / "pruned.onnx")
    assert export.max_abs_diff <= 1e-4


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "convnext_atto", "resnet18"])
def test_other_families_are_refused_before_any_work(name, run_cli, tmp_path):
    result = run_cli(["analyze", "--model", name, "--weights", "random", "--data", "digits:test",
                      "--out", tmp_path / "out"])
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "models are not supported" in lines[0] and "vit, beit, eva" in lines[0]
    assert not (tmp_path / "out").exists()


def test_mlp_with_a_hidden_norm_is_analysed_but_not_pruned():
    """EVA-02 with scale_mlp normalises its hidden neurons: removal would change the others."""
    model, spec = pp.create_model("eva02_tiny_patch14_224", "random", img_size=28, patch_size=7, scale_mlp=True,
                                  **SMALL)
    layouts = mlp_layouts(model)
    assert layouts[0].has_norm
    x = torch.randn(2, *model_input_shape(model))
    result = pp.NeuronPathSearch(model, pp.PathConfig(steps=2, token="patches")).attribute(x)
    assert result.path.shape == (2, 2, 1)
    with pytest.raises(pp.ModelError, match="normalises its hidden neurons"):
        pp.prune_mlp(model, pp.RandomImportance().fit(model), 0.5)


@pytest.mark.slow  # end-to-end command chain on two families
def test_cli_chain_on_beit_and_eva(run_cli, tmp_path, image_folder):
    """The commands themselves on the two non-ViT families (analyze -> prune -> export)."""
    for name, overrides in (("beit_base_patch16_224", ["--img-size", "32", "--model-arg", "patch_size=8"]),
                            ("eva02_tiny_patch14_224", ["--img-size", "28", "--model-arg", "patch_size=7"])):
        model_args = ["--model", name, "--weights", "random", "--num-classes", "3", *overrides,
                      "--model-arg", "depth=2", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2"]
        out = tmp_path / name
        result = run_cli(["analyze", *model_args, "--data", image_folder.root, "--steps", "2", "--topk", "2",
                          "--out", out / "paths", "--quiet"])
        assert result.code == 0, result.err
        result = run_cli(["prune", *model_args, "--paths", out / "paths", "--ratio", "0.5",
                          "--out", out / "pruned", "--quiet"])
        assert result.code == 0, result.err
        result = run_cli(["export", out / "pruned", "--out", out / "pruned.onnx"])
        assert result.code == 0, result.err
        assert (out / "pruned.onnx").stat().st_size > 0
