"""Every registered implementation, parametrised over its registry (as timm's tests run over
`list_models()`): adding one is one registration plus these checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pathprune as pp
from pathprune.attribution import JAS_FORMS, PATH_METHODS, QUADRATURE_RULES, quadrature_nodes
from pathprune.deploy import EXPORTERS, RUNTIMES, available_runtimes, make_runner
from pathprune.models import WEIGHT_FORMATS, model_input_shape
from pathprune.pruning import IMPORTANCES
from pathprune.registry import Registry


@pytest.mark.parametrize("rule", QUADRATURE_RULES.names())
def test_quadrature_rule(rule):
    for steps in (1, 4, 16):
        alphas, weights = quadrature_nodes(rule, steps)
        assert alphas.shape == weights.shape == (steps,)
        assert float(alphas.min()) >= 0 and float(alphas.max()) <= 1
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    # converges to the integral of a smooth function on [0, 1]
    a, w = (torch.as_tensor(t, dtype=torch.float64) for t in QUADRATURE_RULES.get(rule)(256))
    assert float((w * torch.exp(a)).sum()) == pytest.approx(math.e - 1, rel=1e-2)


@pytest.mark.parametrize("form", JAS_FORMS.names())
def test_jas_form_candidates_agree_with_path_scores(form):
    """Scoring candidate j as an extension of P equals scoring the path P + {j} itself."""
    spec = JAS_FORMS.get(form)
    gen = torch.Generator().manual_seed(0)
    a_l, g_l = torch.randn(3, 2, 5, generator=gen), torch.randn(3, 2, 5, generator=gen)
    prev = pp.attribution.PathTerms(torch.randn(3, generator=gen), torch.randn(3, generator=gen),
                                    torch.randn(3, generator=gen))
    candidates = spec.candidates(prev, a_l, g_l)
    for j in range(5):
        a, g = a_l[:, :, j], g_l[:, :, j]
        extended = pp.attribution.PathTerms(prev.g + g.sum(1), prev.a + a.sum(1), prev.ag + (a * g).sum(1))
        torch.testing.assert_close(candidates[:, j], spec.score(extended))


@pytest.fixture(scope="module")
def digits():
    model, spec = pp.create_model("digits")
    images = pp.open_images("digits:test", spec.preprocessing, max_images=12)
    x, y = next(pp.labelled_batches(images, 12))
    return model, spec, x, y


@pytest.mark.parametrize("method", PATH_METHODS.names())
def test_path_method(method, digits):
    model, spec, x, y = digits
    search = pp.NeuronPathSearch(model, pp.PathConfig(steps=2, topk=3))
    result = search.attribute(x[:4], target=y[:4])
    records = [{"path": result.path[i].tolist(), "act_path": result.act_path[i].tolist()} for i in range(4)]
    cp = search.prepare(x[:4], y[:4])
    path = PATH_METHODS.get(method)(search, cp, records, 3, torch.Generator().manual_seed(0))
    assert len(path) == 6
    for layer, ids in enumerate(path):
        assert ids.shape == (4, 3)
        assert all(len(set(row.tolist())) == 3 for row in ids)  # distinct neurons
        assert int(ids.min()) >= 0 and int(ids.max()) < spec.mlp_hidden[layer]


@pytest.mark.parametrize("name", IMPORTANCES.names())
def test_importance(name, digits):
    model, spec, x, y = digits
    stats = pp.PathStatistics(10, spec.mlp_hidden)
    stats.add(y, pp.NeuronPathSearch(model, pp.PathConfig(steps=2, topk=3, token="all")).attribute(x, target=y))
    analysis = pp.Analysis.from_statistics(stats)
    from pathprune.pruning.importance import needs_of

    needs = needs_of(IMPORTANCES.entry(name).meta["needs"])
    assert needs <= {"analysis", "calibration"}
    importance = pp.create_importance(name, analysis=analysis if "analysis" in needs else None)
    assert isinstance(importance, pp.NeuronImportance)
    fitted = importance.fit(model, (x, y) if "calibration" in needs else None)
    scores = fitted.neuron_scores()
    assert [len(s) for s in scores] == spec.mlp_hidden
    assert all(torch.isfinite(s).all() for s in scores)
    result = pp.prune_mlp(model, fitted, 0.75)
    # the kept neurons are the highest-scoring ones of every block
    for layer, kept in enumerate(result.kept):
        assert sorted(kept) == sorted(torch.topk(scores[layer], 64).indices.tolist())
    assert pp.mlp_widths(result.model) == [64] * 6
    if needs:
        with pytest.raises(pp.ConfigError):  # without what it needs (each missing in turn)
            fitted_without = pp.create_importance(name)
            fitted_without.fit(model, None)
    if needs == {"analysis", "calibration"}:
        with pytest.raises(pp.ConfigError) as err:
            pp.create_importance(name, analysis=analysis).fit(model, None)
        assert err.value.param == "calib_data"


@pytest.mark.parametrize("exporter", EXPORTERS.names())
def test_exporter(exporter, tiny_vit, tmp_path):
    model, _ = tiny_vit(seed=2)
    result = pp.export_onnx(model, tmp_path / f"{exporter}.onnx", exporter=exporter)
    assert result.exporter == exporter and result.max_abs_diff <= 1e-4


@pytest.mark.parametrize("runtime", RUNTIMES.names())
def test_runtime(runtime, tiny_vit, tmp_path):
    if runtime not in available_runtimes():
        assert "cuda" in runtime and not torch.cuda.is_available()
        pytest.skip(f"{runtime} cannot run on this machine")
    model, _ = tiny_vit(seed=3)
    onnx_file = pp.export_onnx(model, tmp_path / "m.onnx").path
    run = make_runner(runtime, model, onnx_file, threads=1)
    x = np.random.default_rng(0).standard_normal((2, *model_input_shape(model))).astype(np.float32)
    out = run(x)
    out = out[0] if isinstance(out, list) else out
    out = out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4)


@pytest.mark.parametrize("suffix", WEIGHT_FORMATS.names())
def test_weight_format_round_trip(suffix, tiny_vit, tmp_path):
    if suffix == ".npz":
        pytest.skip("Google .npz files are written and loaded in test_models_data / test_published_parity")
    model, _ = tiny_vit(seed=4)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    from conftest import BASE, TINY_CLASSES, TINY_IMG, tiny_model_args

    loaded, spec = pp.create_model(BASE, path, img_size=TINY_IMG, num_classes=TINY_CLASSES,
                                   model_args=tiny_model_args())
    x = torch.randn(2, *model_input_shape(model))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert spec.weights_sha256 is not None


def test_registry_contract():
    registry: Registry = Registry("colour")
    registry.register("red", 1, help="warm")
    with pytest.raises(pp.ConfigError, match="already registered"):
        registry.register("red", 2)
    registry.register("red", 3, help="hot", replace=True)
    assert registry.get("red") == 3 and registry.names() == ["red"] and "red" in registry
    with pytest.raises(pp.ConfigError, match="unknown colour 'blue' \\(choose one of red\\)"):
        registry.get("blue")
    assert registry.help_text() == "red: hot"
    registry.unregister("red")
    assert len(registry) == 0
