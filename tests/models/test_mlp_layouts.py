"""mlp_layouts describes every MLP block of a model consistently."""

from __future__ import annotations


import pathprune as pp
from pathprune.models import mlp_layouts


def test_every_mlp_layout_is_consistent():
    model, _ = pp.create_model("digits")
    for layout in mlp_layouts(model):
        assert layout.inputs[0].out_features == layout.width and layout.site is layout.output
