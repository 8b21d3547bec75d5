"""A user's registered importance becomes a command-line choice."""

from __future__ import annotations

import json

import torch

import pathprune as pp
from pathprune.models import mlp_layouts


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
