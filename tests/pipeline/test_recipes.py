"""Recipes: the paper's published settings, recipe values as defaults, explicit options win, bad files."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from pathprune.recipes import RECIPE_DIR, recipe_defaults

PAPER = {"ViT-B_16": "cls", "ViT-B_32": "cls", "ViT-L_32": "cls", "MAE-B_16": "patches"}
ANALYZE_PARAMS = {"model_name", "img_size", "token", "jas", "quadrature", "steps", "topk", "batch_size",
                  "preprocess", "target", "objective", "data", "images_per_class"}


@pytest.mark.parametrize("name,scope", PAPER.items())
def test_paper_recipes_carry_the_published_settings(name, scope):
    got = recipe_defaults(RECIPE_DIR / f"{name}.yaml", "analyze", ANALYZE_PARAMS)
    assert got == {"model_name": name, "img_size": 224, "token": scope, "jas": "reference",
                   "quadrature": "riemann", "steps": 20, "topk": 1, "batch_size": 10, "preprocess": "reference",
                   "target": "label", "objective": "prob"}
    from pathprune.models import MODEL_ALIASES

    assert name in MODEL_ALIASES  # the recipe's model name is one create_model knows
    if name == "MAE-B_16":
        assert MODEL_ALIASES[name].overrides["global_pool"] == "avg"


def test_every_recipe_option_exists_on_its_command():
    """A misspelt key would be silently ignored: each key must name an option of some command."""
    import yaml

    from pathprune.cli import command_table

    options = {name: {p.name for p in cmd.params} for name, cmd in command_table().items()}
    every = set().union(*options.values()) | {"model"}
    for path in ["ViT-B_16", "ViT-B_32", "ViT-L_32", "MAE-B_16", "digits_demo"]:
        recipe = yaml.safe_load((RECIPE_DIR / f"{path}.yaml").read_text())
        for key, value in recipe.items():
            if isinstance(value, dict):
                assert key in options, f"{path}: no command '{key}'"
                for sub in value:
                    name = {"model": "model_name"}.get(sub.replace("-", "_"), sub.replace("-", "_"))
                    assert name in options[key], f"{path}: '{key}' has no option '{sub}'"
            else:
                assert key.replace("-", "_") in every, f"{path}: no command has '{key}'"


def _bench_settings(args: list[str]) -> dict:
    """Run `pathprune bench ARGS` with run_bench replaced; return the settings it was given."""
    from click.testing import CliRunner

    import pathprune.evaluate.bench as bench_mod
    from pathprune.cli import cli

    seen: dict = {}

    def fake_run(models, images, settings, out, **kw):
        seen.update(repeats=settings.repeats, batch_sizes=settings.batch_sizes, backends=settings.backends,
                    warmup=settings.warmup, dense=models[0].name)
        return {"models": [], "latency": []}

    with mock.patch.object(bench_mod, "run_bench", fake_run), \
            mock.patch("pathprune.evaluate.bench.load_pruned_dir", lambda d: mock.MagicMock()), \
            mock.patch("pathprune.data.open_images", lambda *a, **k: None):
        result = CliRunner().invoke(cli, ["bench", *args])
    seen["exit"] = result.exit_code
    return seen


def test_recipe_values_are_defaults_and_explicit_options_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: vit_tiny_patch16_224\nweights: random\nimg-size: 32\nrepeats: 9\n"
                      "bench:\n  repeats: 7\n  batch-sizes: '2'\n  backends: ort-cpu\n"
                      "analyze:\n  repeats: 100\n")
    base = ["--recipe", str(recipe), "--pruned", "p", "--data", "d", "--out", str(tmp_path / "o"),
            "--model-arg", "depth=1", "--model-arg", "patch_size=8"]
    got = _bench_settings(base)
    # the bench section beats the top level; another command's section is ignored
    assert got["repeats"] == 7 and got["batch_sizes"] == (2,) and got["backends"] == ("ort-cpu",)
    assert got["warmup"] == 3 and got["dense"] == "vit_tiny_patch16_224"
    got = _bench_settings(base + ["--repeats", "4", "--batch-sizes", "1,5"])
    assert got["repeats"] == 4 and got["batch_sizes"] == (1, 5) and got["backends"] == ("ort-cpu",)


def test_recipe_gives_export_its_positional_model(tmp_path, run_cli):
    from conftest import make_tiny
    from conftest import slice_pruned_dir

    model, spec = make_tiny(seed=0)
    pruned = slice_pruned_dir(model, spec, [10, 5], tmp_path / "p")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {pruned}\nimg-size: 32\nexport:\n  exporter: torchscript\n  opset: 17\n")
    res = run_cli(["export", "--recipe", recipe, "--out", tmp_path / "m.onnx"])
    assert res.code == 0, res.output
    assert "opset 17" in res.out and (tmp_path / "m.onnx").is_file()
    res = run_cli(["export", "--recipe", recipe, "--opset", "18", "--out", tmp_path / "n.onnx"])
    assert res.code == 0 and "opset 18" in res.out


@pytest.mark.parametrize("text,match", [("bench: [1\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping"),
                                        ("bench: 3\nexport: 3\ndemo: 3\n", "must be a mapping")])
def test_bad_recipe_is_a_one_line_error(tmp_path, run_cli, text, match):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    for command in (["bench", "--data", "d", "--out", tmp_path / "o"], ["export", "x", "--out", tmp_path / "x.onnx"],
                    ["demo", "--out", tmp_path / "demo"]):
        res = run_cli([command[0], "--recipe", recipe, *command[1:]])
        assert res.code == 2, res.output
        assert match in res.err and len(res.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_missing_recipe_is_a_one_line_error(tmp_path, run_cli):
    res = run_cli(["export", "--recipe", tmp_path / "nope.yaml", "x", "--out", tmp_path / "x.onnx"])
    assert res.code == 2 and "file not found" in res.err
