"""Which analysis settings prune well, and advice when an analysis was made for the paper's studies.

The paper's analyses follow one path per image (top-1) at the class token; for pruning without
repair, paths of every token and several neurons per layer rank neurons far better
(benchmarks/results_prune.md). With least-squares reconstruction the difference shrinks and on the
digits model reverses at ratios 0.9-0.95 (benchmarks/results_repair.md), so ``prune`` gives this
advice only when it does not reconstruct. The advice is a structured warning: its ``analyze``
settings say what to run instead (the command line turns them into a command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the analysis settings that prune best without repair (digits model and the issue's 8-block ViT)
PRUNING_ANALYSIS = {"topk": 5, "token": "all"}


class AnalysisAdvice(UserWarning):
    """An analysis made with the paper's settings is about to rank neurons for pruning without repair.

    ``analyze`` holds the settings of the analysis to run instead (option name -> value: model,
    weights, model_arg, data, topk, token, out).

    >>> advice = AnalysisAdvice("runs/a", 1, "cls", {"model": "digits", "topk": 5, "token": "all"})
    >>> str(advice).startswith("the analysis runs/a was made with topk=1, token='cls'")
    True
    """

    def __init__(self, paths: str, topk: int, token: str, analyze: dict[str, Any]):
        self.paths, self.topk, self.token, self.analyze = str(paths), topk, token, dict(analyze)
        super().__init__(self.describe())

    def describe(self) -> str:
        best = PRUNING_ANALYSIS
        return (f"the analysis {self.paths} was made with topk={self.topk}, token='{self.token}' (the paper's "
                f"setting); without reconstruction, neurons ranked by it prune worse than with "
                f"topk={best['topk']}, token='{best['token']}'")


def analysis_advice(run: dict[str, Any], where: str = "DIR") -> AnalysisAdvice | None:
    """The advice (with the analysis to run instead) when `run` (an analysis run.json) used the
    paper's settings (top-1 path, class token) rather than :data:`PRUNING_ANALYSIS`; None when fine.

    >>> analysis_advice({"settings": {"path": {"topk": 5, "token": "all"}}}) is None
    True
    >>> analysis_advice({"settings": {"path": {"topk": 1, "token": "cls"}}, "model": {"name": "digits"},
    ...                  "data": {"root": "digits:train"}}, "runs/a").analyze
    {'model': 'digits', 'data': 'digits:train', 'topk': 5, 'token': 'all', 'out': 'runs/a-prune'}
    """
    path = (run.get("settings") or {}).get("path") or {}
    topk, token = path.get("topk"), path.get("token")
    if topk is None or token is None or (topk >= PRUNING_ANALYSIS["topk"] and token == PRUNING_ANALYSIS["token"]):
        return None
    model = run.get("model") or {}
    settings: dict[str, Any] = {"model": str(model.get("name") or "MODEL")}
    plain = model.get("name") != "digits" and not Path(str(model.get("name", ""))).is_dir()
    if plain and model.get("weights"):
        settings["weights"] = str(model["weights"])
    if plain and model.get("overrides"):
        settings["model_arg"] = [f"{key}={value}" for key, value in model["overrides"].items()]
    settings.update({"data": str((run.get("data") or {}).get("root") or "DATA"), **PRUNING_ANALYSIS,
                     "out": f"{where}-prune"})
    return AnalysisAdvice(where, topk, token, settings)
