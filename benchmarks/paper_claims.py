"""Check the paper's claims about influential neuron paths on the embedded digits model.

Protocol (the paper manipulates the images it computed paths for):
1. ``pathprune analyze`` on digits:test (``--test-per-class`` images per class): each image's JAS path
   and activation path; ``pathprune manipulate`` on exactly those images compares them with
   knowledge-neuron, influence-pattern and random paths (remove = x0, enhance = x2 at the class token) and the final JAS
   of every method's path.
2. ``pathprune analyze`` on digits:train (``--train-per-class`` per class): ``pathprune structure``
   gives the per-class neuron frequency maps and within- versus between-class path similarity.

Writes benchmarks/results_paper_claims.md and benchmarks/figures/paper_*.png.

    python -m benchmarks.paper_claims [--train-per-class 50] [--test-per-class N] [--steps 8] [--threads 1]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness

HERE = Path(__file__).resolve().parent


def run(args: list[str]) -> None:
    """Run a pathprune command in-process (exits on error)."""
    from pathprune.cli import main

    print("$ pathprune " + " ".join(args), flush=True)
    main(args)


def claims_table(man: dict, scores: dict, structure: dict) -> str:
    """The paper's claims, each with what was measured here."""
    from pathprune.evaluate.report import write_markdown_table

    rows = []
    by = man["by_method"]
    for op, verb in (("remove", "lowers"), ("enhance", "raises")):
        for baseline, comp in man["jas_vs"].items():
            rows.append({
                "claim": f"{op} JAS path {verb} target probability more than {baseline}",
                "jas": by["jas"][op]["mean_relative_prob_deviation"],
                "baseline": by[baseline][op]["mean_relative_prob_deviation"],
                "images": comp[op]["fraction_images_jas_stronger"],
                "holds": comp[op]["jas_stronger_on_average"]})
    for op in ("remove", "enhance"):
        others = [m for m in by if m != "jas"]
        pick = min if op == "remove" else max
        best = pick(others, key=lambda m: by[m][op]["accuracy_deviation"])
        jas, other = by["jas"][op]["accuracy_deviation"], by[best][op]["accuracy_deviation"]
        rows.append({"claim": f"{op}: JAS path changes top-1 accuracy more than every baseline (best: {best})",
                     "jas": jas, "baseline": other, "images": None,
                     "holds": jas < other if op == "remove" else jas > other})
    for baseline in scores["ranking"]:
        if baseline == "jas":
            continue
        rows.append({"claim": f"JAS path has a higher final JAS than the {baseline} path",
                     "jas": scores["mean_path_jas"]["jas"], "baseline": scores["mean_path_jas"][baseline],
                     "images": None,
                     "holds": scores["mean_path_jas"]["jas"] > scores["mean_path_jas"][baseline]})
    rows.append({"claim": "JAS paths are more similar within a class than between classes (Jaccard)",
                 "jas": structure["path"]["within_class"], "baseline": structure["path"]["between_class"],
                 "images": None, "holds": structure["path"]["within_class"] > structure["path"]["between_class"]})
    return write_markdown_table(rows, ["claim", ("jas", "JAS path"), ("baseline", "baseline / other"),
                                       ("images", "images where JAS stronger"), ("holds", "holds here")])


def agreement_note(summary: dict) -> str:
    """One sentence on how often the baselines' paths coincide with the JAS path."""
    agreement = summary.get("agreement_with_jas", {})
    parts = [f"{m} {v['fraction_identical_paths']:.1%} of images ({v['fraction_identical_layers']:.1%} of layers)"
             for m, v in agreement.items() if m != "jas"]
    return ("Paths identical to the JAS path: " + "; ".join(parts) + ". Where a baseline's path equals the "
            "JAS path its effects are identical, so differences between those two methods come from the rest.")


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__, "benchmarks.paper_claims", out="results_paper_claims.md",
                            out_flags=("--out", "--results"), threads=1, seed=0,
                            threads_help="torch threads (1 avoids OpenMP oversubscription on a shared 2-core machine)")
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=None, help="[default: every test image]")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--jas", default="paper", choices=["paper", "reference"])
    parser.add_argument("--figures", type=Path, default=HERE / "figures")
    parser.add_argument("--work", type=Path, default=None, help="Keep the intermediate outputs here.")
    parser.add_argument("--digits-dir", type=Path, default=None,
                        help="Use digits.json/.safetensors from this directory instead of pathprune/assets "
                             "(e.g. a retrained model).")
    opts = parser.parse_args(argv)
    if opts.digits_dir is not None:
        import pathprune.models.digits

        pathprune.models.digits.DIGITS_DIR = opts.digits_dir

    import pathprune.cli  # noqa: F401 - registers the commands before their module is imported here
    from pathprune.evaluate.paper_report import manipulation_markdown, scores_markdown
    from pathprune.evaluate.report import write_markdown_table

    torch.set_num_threads(opts.threads)
    work = opts.work or Path(tempfile.mkdtemp(prefix="paper_claims."))
    common = ["--steps", str(opts.steps), "--jas", opts.jas, "--quiet", "--device", "cpu"]
    measured = harness.Run(threads=opts.threads)
    started = time.perf_counter()
    timings = {}
    t = time.perf_counter()
    run(["analyze", "--model", "digits", "--data", "digits:test", "--out", str(work / "test"),
         *(["--images-per-class", str(opts.test_per_class)] if opts.test_per_class else []), *common])
    timings["analyze digits:test"] = time.perf_counter() - t
    t = time.perf_counter()
    run(["manipulate", "--model", "digits", "--paths", str(work / "test"), "--out", str(work / "manipulate"),
         "--seed", str(opts.seed), "--device", "cpu", "--quiet"])
    timings["manipulate + scores"] = time.perf_counter() - t
    t = time.perf_counter()
    run(["analyze", "--model", "digits", "--data", "digits:train", "--out", str(work / "train"),
         "--images-per-class", str(opts.train_per_class), *common])
    timings["analyze digits:train"] = time.perf_counter() - t
    t = time.perf_counter()
    run(["structure", "--paths", str(work / "train"), "--out", str(work / "structure")])
    timings["structure"] = time.perf_counter() - t
    total = time.perf_counter() - started

    manip = json.loads((work / "manipulate" / "manipulate.json").read_text())["summary"]
    structure = json.loads((work / "structure" / "structure.json").read_text())["summary"]
    test_summary = json.loads((work / "test" / "summary.json").read_text())
    train_summary = json.loads((work / "train" / "summary.json").read_text())

    run_model = json.loads((work / "test" / "run.json").read_text())["model"]
    weights_sha = (run_model.get("weights_sha256") or "?")[:16]
    model_note = ("the embedded pathprune/assets model" if opts.digits_dir is None
                  else f"from {opts.digits_dir}, not the embedded pathprune/assets model: rerun "
                       "`python -m benchmarks.paper_claims` for the shipped one")
    opts.figures.mkdir(parents=True, exist_ok=True)
    figures = {"manipulate/manipulation_probability.png": "paper_manipulation_probability.png",
               "manipulate/manipulation_accuracy.png": "paper_manipulation_accuracy.png",
               "manipulate/scores.png": "paper_scores.png",
               "structure/similarity_path.png": "paper_similarity_path.png",
               "structure/similarity_act_path.png": "paper_similarity_act_path.png",
               "structure/frequency_path.png": "paper_frequency_path.png"}
    for source, name in figures.items():
        shutil.copyfile(work / source, opts.figures / name)
    rel = opts.figures.relative_to(opts.out.parent) if opts.figures.is_relative_to(opts.out.parent) \
        else opts.figures

    struct_rows = [{"kind": k, **{f: structure[k][f] for f in ("within_class", "between_class", "within_over_between")},
                    "top": sum(structure[k]["top_neuron_frequency_per_layer"]) / len(structure[k]["top_neuron_frequency_per_layer"]),
                    "distinct": structure[k]["distinct_neurons_per_layer"]} for k in ("path", "act_path")]
    text = f"""## Paper claims on the embedded digits model

Model: `digits` ({model_note}), weights sha256 `{weights_sha}`.
Generated by `python -m benchmarks.paper_claims --train-per-class {opts.train_per_class}{f" --test-per-class {opts.test_per_class}" if opts.test_per_class else ""} --threads {opts.threads} --steps {opts.steps} --jas {opts.jas} --seed {opts.seed}`
in {total:.0f} s ({", ".join(f"{k} {v:.0f} s" for k, v in timings.items())}).

**Protocol.** The paper measures manipulation on the images it computed paths for. So the per-image
paths for manipulation and score comparison come from `pathprune analyze` on **digits:test**
({test_summary['num_records']} images, {f"the first {opts.test_per_class} of each class" if opts.test_per_class else "the whole split"}; clean top-1 {test_summary['top1']:.3f},
mean target probability {test_summary['mean_prob']:.3f}), and `pathprune manipulate` zeroes (remove) or doubles
(enhance) each image's own path neurons at the class token and measures the target (= label) probability
and top-1 accuracy. Methods: the JAS path, the activation path (largest clean activation per layer),
the knowledge-neuron path (Dai et al. 2022: per layer the largest integrated gradient when only that
whole layer is scaled), the influence pattern (Lu et al. 2021, adapted to MLP neurons: layer by layer
the neuron through which the chosen chain carries the most path-integrated gradient of the input's
effect, `pathprune.attribution.influence`) and a seeded random path, all with one neuron per layer (K = 1). The class
structure (frequency maps, within/between-class similarity) uses paths of **digits:train**
({train_summary['num_records']} images, the first {opts.train_per_class} per class), i.e. the images the paths would be aggregated from for
pruning. Path settings: JAS form `{opts.jas}`, {opts.steps} Gauss-Legendre nodes, class-token scope.
A subset of digits:train keeps the run well within the 10-minute budget on 2 cores.

### The claims, measured

{claims_table(manip['manipulation'], manip['scores'], structure)}
Relative probability deviation = mean over images of (p_after - p_before) / p_before.
{agreement_note(manip)}

{manipulation_markdown(manip)}
![probability deviation]({rel}/paper_manipulation_probability.png)
![accuracy deviation]({rel}/paper_manipulation_accuracy.png)

{scores_markdown(manip)}
![scores]({rel}/paper_scores.png)

### Class structure ({structure['num_images']} digits:train images)

Similarity of two images' paths = Jaccard index of their (layer, neuron) sets; "top-neuron frequency"
= per layer, the largest fraction of a class's images sharing one neuron, averaged over classes and layers.

Within-class over between-class similarity: {structure["path"]["within_over_between"]:.2f} (JAS path), {structure["act_path"]["within_over_between"]:.2f} (activation path); the activation
path is {"more" if structure["act_path"]["within_class"] > structure["path"]["within_class"] else "less"} class-consistent than the JAS path here
(within-class Jaccard {structure["act_path"]["within_class"]:.3f} versus {structure["path"]["within_class"]:.3f}).

{write_markdown_table(struct_rows, [("kind", "path kind"), ("within_class", "within-class"), ("between_class", "between-class"), ("within_over_between", "ratio"), ("top", "top-neuron frequency"), ("distinct", "distinct neurons per layer")])}
![similarity]({rel}/paper_similarity_path.png)
![similarity activation path]({rel}/paper_similarity_act_path.png)
![frequency]({rel}/paper_frequency_path.png)
""" + measured.footer()
    harness.write_results(opts.out, text)
    print(f"-> {opts.out} ({total:.0f} s)")
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
