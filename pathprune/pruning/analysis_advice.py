"""Which analysis settings prune well, and advice when an analysis was made for the paper's studies.

The paper's analyses follow one path per image (``--topk 1``) at the class token; for pruning without
repair, paths of every token and several neurons per layer rank neurons far better
(benchmarks/results_prune.md). With least-squares reconstruction the difference shrinks and on the
digits model reverses at ratios 0.9-0.95 (benchmarks/results_repair.md), so ``prune`` gives this
advice only when it does not reconstruct.
"""

from __future__ import annotations

import shlex
from typing import Any

#: the analysis settings that prune best without repair (digits model and the issue's 8-block ViT)
PRUNING_ANALYSIS = {"topk": 5, "token": "all"}


def analysis_advice(run: dict[str, Any], where: str = "DIR") -> str | None:
    """A warning (with the command to run instead) when `run` (an analysis run.json) used the paper's
    settings (top-1 path, class token) rather than :data:`PRUNING_ANALYSIS`; None when it is fine.

    >>> analysis_advice({"settings": {"path": {"topk": 5, "token": "all"}}}) is None
    True
    """
    path = (run.get("settings") or {}).get("path") or {}
    topk, token = path.get("topk"), path.get("token")
    if topk is None or token is None or (topk >= PRUNING_ANALYSIS["topk"] and token == PRUNING_ANALYSIS["token"]):
        return None
    model = run.get("model") or {}
    command = ["pathprune", "analyze", "--model", str(model.get("name") or "MODEL")]
    from pathlib import Path

    plain = model.get("name") != "digits" and not Path(str(model.get("name", ""))).is_dir()
    if plain and model.get("weights"):
        command += ["--weights", str(model["weights"])]
    if plain:
        for key, value in (model.get("overrides") or {}).items():
            command += ["--model-arg", f"{key}={value}"]
    command += ["--data", str((run.get("data") or {}).get("root") or "DATA"),
                "--topk", str(PRUNING_ANALYSIS["topk"]), "--token", PRUNING_ANALYSIS["token"], "--out", f"{where}-prune"]
    return (f"--paths {where} was analysed with --topk {topk} --token {token} (the paper's setting); without "
            f"--reconstruct, neurons ranked by it prune worse than with --topk {PRUNING_ANALYSIS['topk']} --token "
            f"{PRUNING_ANALYSIS['token']}. For pruning, run: {shlex.join(command)}")
