"""`python tests/helpers/dist_reconstruct.py PRUNED_DIR DATA_DIR OUT_PREFIX`: reconstruction under torchrun.

Every rank runs the reconstructions of :func:`reconstructions` (several modes, targets and data kinds) on
its shard and writes the re-fitted fc2 weights it ends with to OUT_PREFIX-RANK.safetensors and the
reports to OUT_PREFIX-RANK.json. The test compares them with the same calls in one process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch


def reconstructions(pruned_dir: str, data_dir: str, distributed: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """fc2 weights and reports of each reconstruction setting (named), computed on `distributed` ranks or one."""
    from pathprune.data import open_images
    from pathprune.models import create_model, mlp_layouts
    from pathprune.repair import ReconstructConfig, find_teacher, read_model_description, reconstruct_mlp

    description = read_model_description(pruned_dir)
    dense, _ = find_teacher(description)
    images = open_images(data_dir, create_model(pruned_dir)[1].preprocessing)
    pair = (torch.stack([images.loader(i) for i in range(15)]), torch.zeros(15, dtype=torch.long))  # 8 + 7 images
    settings = {
        "sequential-residual-cached": (ReconstructConfig(), images, {}),
        "sequential-residual-streamed": (ReconstructConfig(), images, {"cache_bytes": 0}),
        "sequential-local-pair": (ReconstructConfig(target="local"), pair, {}),
        "sequential-dense-streamed-pair": (ReconstructConfig(target="dense"), pair, {"cache_bytes": 0}),
        "independent": (ReconstructConfig(mode="independent"), images, {"kept": description["kept"]}),
    }
    weights, reports = {}, {}
    for name, (config, data, extra) in settings.items():
        model, _ = create_model(pruned_dir)
        report = reconstruct_mlp(model, dense, data, config, batch_size=5, distributed=distributed, **extra)
        for i, layout in enumerate(mlp_layouts(model)):
            weights[f"{name}.{i}.weight"] = layout.output.weight.detach().clone().contiguous()
            weights[f"{name}.{i}.bias"] = layout.output.bias.detach().clone().contiguous()
        reports[name] = report.to_dict()
    return weights, reports


def main(pruned_dir: str, data_dir: str, prefix: str) -> None:
    from safetensors.torch import save_file

    from pathprune.distributed import torchrun_process_group

    torch.set_num_threads(1)
    with torchrun_process_group("cpu") as (ranks, _):
        assert ranks.world_size == 2, ranks
        weights, reports = reconstructions(pruned_dir, data_dir, distributed=True)
    save_file(weights, f"{prefix}-{ranks.rank}.safetensors")
    with open(f"{prefix}-{ranks.rank}.json", "w") as fh:
        json.dump(reports, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
