"""Does statistics format 2 (marginal candidate scores a_j * IG_j) keep `prune`'s ranking?

Runs `pathprune analyze` on the digits model twice per setting, once with a checkout of the previous
engine (format 1: JAS(P + j) recorded, full-backward search) and once with this checkout, then compares
the neurons each keeps under path importance (uniform and global scope, several ratios) and the paths.

    python benchmarks/stats_format_check.py --old /path/to/previous/checkout [--images-per-class 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"default (topk 1, cls)": [], "--topk 5 --token all": ["--topk", "5", "--token", "all"]}
RATIOS = (0.5, 0.9, 0.95)
SCOPES = ("uniform", "global")

KEPT = """
import json, sys
from pathprune.pruning.importance import load_analysis, path_importance
from pathprune.pruning.selection import select_kept
analysis = load_analysis(sys.argv[1])
scores = path_importance(analysis)
out = {}
for scope in ("uniform", "global"):
    for ratio in (0.5, 0.9, 0.95):
        kept = select_kept(scores, ratio, scope, min_per_layer=0.03 if scope == "global" else 1)
        out[f"{scope} {ratio}"] = [k.tolist() for k in kept]
print(json.dumps(out))
"""


def run(code_root: Path, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=str(code_root))
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout of the previous engine (format 1)")
    parser.add_argument("--images-per-class", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None)
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="stats_format."))
    lines = [f"Digits model, `analyze --data digits:train --images-per-class {opts.images_per_class}` (paper form, "
             "8 Gauss nodes); kept neurons of path importance, previous engine (format 1) vs this one (format 2):", "",
             "| analysis | same paths | scope | ratio | kept neurons identical | differing neurons |",
             "|---|---|---|---:|---|---:|"]
    for label, extra in SETTINGS.items():
        kept, records = {}, {}
        for version, root in (("old", opts.old.resolve()), ("new", ROOT)):
            out = work / f"{version}-{len(extra)}"
            if not (out / "summary.json").exists():
                run(root, ["-m", "pathprune", "analyze", "--model", "digits", "--data", "digits:train",
                           "--images-per-class", str(opts.images_per_class), "--out", str(out), "--quiet",
                           "--device", "cpu", *extra])
            kept[version] = json.loads(run(root, ["-c", KEPT, str(out)]))
            records[version] = [json.loads(line)["path"] for line in (out / "paths.jsonl").read_text().splitlines()]
        same_paths = records["old"] == records["new"]
        for key in kept["new"]:
            scope, ratio = key.split()
            diff = sum(len(set(a) ^ set(b)) for a, b in zip(kept["old"][key], kept["new"][key])) // 2
            lines.append(f"| {label} | {'yes' if same_paths else 'NO'} | {scope} | {ratio} | "
                         f"{'yes' if diff == 0 else 'no'} | {diff} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
