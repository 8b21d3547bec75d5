"""The path search leaves the caller's model as it was (and runs it in eval mode)."""

from __future__ import annotations

import copy

import torch

import pathprune as pp

from conftest import assert_same_state, model_state


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
