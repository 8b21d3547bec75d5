"""Model-family adapters: the one place that knows a family's layout.

An adapter knows, for one family of timm models, where the transformer blocks and their MLPs are,
which projections a hidden neuron spans (fc1's row and fc2's column; for gated MLPs the rows of both
the gate and the value projection), how many prefix tokens (class, distillation, register) precede the
patches, the input shape, how to rebuild MLPs at other widths and which torch-pruning group removes a
neuron. Everything else in pathprune asks the adapter through the functions of this module
(:func:`mlp_layouts`, :func:`mlp_input_hooks`, :func:`token_range`, ...).

Supported families (``list_families()``): ``vit`` (timm ``VisionTransformer`` and its subclasses:
class-token and pooled ViTs, DeiT with a distillation token, DeiT-III layer scale, register tokens as
in DINOv2, SigLIP's attention-pooled ViTs, MAE), ``beit`` (BEiT, relative position bias) and ``eva``
(EVA-02, SwiGLU MLPs and rotary embeddings). A model of any other family is refused before any work
with a one-line :class:`~pathprune.errors.ModelError` that names its class.

Example::

    >>> import timm
    >>> from pathprune.models import family_of, mlp_widths, token_range
    >>> m = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8)
    >>> family_of(m).name, mlp_widths(m), token_range(m, "patches")
    ('vit', [768, 768], (1, 17))
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..registry import Registry
from .scopes import TOKEN_SCOPES  # noqa: F401 - which token positions a neuron is read and intervened at


@dataclass(frozen=True)
class MlpLayout:
    """One block's MLP: the projections a hidden neuron spans, and where its activation is read.

    ``inputs``: the projections whose output rows are neurons (``fc1``, or the gate and value
    projections of an unpacked SwiGLU); ``packed``: fc1 holds gate and value halves (GluMlp), so
    neuron j is rows j and j + width; ``output``: fc2, whose input columns are the neurons; ``site``:
    the module whose input is the neuron activations (fc2, or the MLP's norm where it has one).
    """

    module: nn.Module
    inputs: tuple[nn.Linear, ...]
    output: nn.Linear
    site: nn.Module
    packed: bool = False

    @property
    def width(self) -> int:
        return int(self.output.in_features)

    @property
    def has_norm(self) -> bool:
        return self.site is not self.output


def _mlp_layout(mlp: nn.Module, where: str) -> MlpLayout:
    """The layout of a timm Mlp, GluMlp/SwiGLUPacked or SwiGLU module."""
    fc2 = getattr(mlp, "fc2", None)
    if not isinstance(fc2, nn.Linear):
        raise ModelError(f"{where}: MLP '{type(mlp).__name__}' has no fc2 Linear layer; not supported")
    norm = getattr(mlp, "norm", None)
    site = norm if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) else fc2
    if hasattr(mlp, "fc1_g") and hasattr(mlp, "fc1_x"):
        return MlpLayout(mlp, (mlp.fc1_g, mlp.fc1_x), fc2, site)
    fc1 = getattr(mlp, "fc1", None)
    if not isinstance(fc1, nn.Linear):
        raise ModelError(f"{where}: MLP '{type(mlp).__name__}' has no fc1 Linear layer; not supported")
    if fc1.out_features == 2 * fc2.in_features:
        return MlpLayout(mlp, (fc1,), fc2, site, packed=True)
    if fc1.out_features != fc2.in_features:
        raise ModelError(f"{where}: fc1 has {fc1.out_features} outputs but fc2 {fc2.in_features} inputs")
    return MlpLayout(mlp, (fc1,), fc2, site)


class ModelFamily:
    """Layout knowledge of one family of timm vision transformers (subclass and register to add one).

    Subclasses set ``name`` and ``model_classes`` and override what differs from these defaults,
    which fit every timm ViT-like model with ``blocks[i].mlp``, ``patch_embed``, ``num_prefix_tokens``.
    """

    name = "base"
    #: timm classes (or class names) of this family
    model_classes: tuple[str, ...] = ()

    def matches(self, model: nn.Module) -> bool:
        return any(cls.__name__ in self.model_classes for cls in type(model).__mro__)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def mlps(self, model: nn.Module) -> list[MlpLayout]:
        return [_mlp_layout(block.mlp, f"block {i}") for i, block in enumerate(self.blocks(model))]

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return int(getattr(model, "num_prefix_tokens", 1))

    def has_class_token(self, model: nn.Module) -> bool:
        flag = getattr(model, "has_class_token", None)
        return bool(flag) if flag is not None else getattr(model, "cls_token", None) is not None

    def num_patches(self, model: nn.Module) -> int:
        return int(model.patch_embed.num_patches)

    def input_shape(self, model: nn.Module) -> tuple[int, int, int]:
        size = model.patch_embed.img_size
        return int(model.patch_embed.proj.in_channels), int(size[0]), int(size[1])

    def default_token_scope(self, model: nn.Module) -> str:
        """``cls`` where the class token is what the head reads, ``patches`` for pooled models."""
        pool = getattr(model, "global_pool", "token")
        return "cls" if self.has_class_token(model) and pool == "token" else "patches"

    def check_prunable(self, model: nn.Module) -> None:
        for i, layout in enumerate(self.mlps(model)):
            if layout.has_norm:
                raise ModelError(f"block {i}: the MLP normalises its hidden neurons "
                                 f"({type(layout.site).__name__}); removing a neuron would change the "
                                 "others, so it cannot be pruned structurally")

    def set_mlp_widths(self, model: nn.Module, widths: Sequence[int]) -> None:
        """Replace each MLP's projections by uninitialised ones of the given hidden widths."""
        layouts = self.mlps(model)
        if len(widths) != len(layouts):
            raise ModelError(f"description has {len(widths)} MLP widths but the model has {len(layouts)} blocks")
        for layout, width in zip(layouts, widths):
            width = int(width)
            if layout.width == width:
                continue
            mlp, fc2 = layout.module, layout.output
            if len(layout.inputs) == 2:
                for name, old in (("fc1_g", layout.inputs[0]), ("fc1_x", layout.inputs[1])):
                    setattr(mlp, name, nn.Linear(old.in_features, width, bias=old.bias is not None))
            else:
                fc1 = layout.inputs[0]
                mlp.fc1 = nn.Linear(fc1.in_features, width * (2 if layout.packed else 1), bias=fc1.bias is not None)
            mlp.fc2 = nn.Linear(width, fc2.out_features, bias=fc2.bias is not None)

    def pruning_group(self, graph, layout: MlpLayout, idxs: Sequence[int]):
        """The torch-pruning group of hidden neurons `idxs` of one MLP (and nothing else).

        For a packed gated MLP (fc1 = [value; gate] halves, split by ``chunk``) torch-pruning's split
        operator couples only the first half's rows with fc2's columns; use :meth:`remove` to delete
        such neurons, which takes both halves.
        """
        import torch_pruning as tp

        idxs = [int(i) for i in idxs]
        group = graph.get_pruning_group(layout.inputs[-1], tp.prune_linear_out_channels, idxs=idxs)
        allowed = {id(m) for m in layout.module.modules()}
        for item in group:
            module = item.dep.target.module
            if isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)) \
                    and id(module) not in allowed:
                raise ModelError(f"torch-pruning would also prune {item.dep.target.name}: only MLP hidden "
                                 "neurons may be removed")
        return group

    def remove_packed(self, layout: MlpLayout, keep: Sequence[int]) -> None:
        """Keep only neurons `keep` of a packed gated MLP: fc1 rows j and j + width, fc2 column j."""
        keep_t = torch.as_tensor(sorted(int(k) for k in keep), dtype=torch.long)
        fc1, fc2, width = layout.inputs[0], layout.output, layout.width
        rows = torch.cat([keep_t, keep_t + width])
        mlp = layout.module
        mlp.fc1, mlp.fc2 = sliced_pair(fc1, fc2, rows, keep_t)


def sliced_pair(first: nn.Linear, second: nn.Linear, rows: torch.Tensor,
                cols: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """New copies of a projection pair keeping `first`'s output rows `rows` and `second`'s input columns
    `cols` (same device, dtype and requires_grad; `second`'s bias unchanged): an MLP's fc1/fc2 without
    some neurons, an attention's qkv/proj without some heads."""
    new_first = nn.Linear(first.in_features, len(rows), bias=first.bias is not None,
                          device=first.weight.device, dtype=first.weight.dtype)
    new_second = nn.Linear(len(cols), second.out_features, bias=second.bias is not None,
                           device=second.weight.device, dtype=second.weight.dtype)
    with torch.no_grad():
        new_first.weight.copy_(first.weight[rows])
        if first.bias is not None:
            new_first.bias.copy_(first.bias[rows])
        new_second.weight.copy_(second.weight[:, cols])
        if second.bias is not None:
            new_second.bias.copy_(second.bias)
    new_first.requires_grad_(first.weight.requires_grad)
    new_second.requires_grad_(second.weight.requires_grad)
    return new_first, new_second


class VisionTransformerFamily(ModelFamily):
    """timm ``VisionTransformer`` and subclasses: ViT, DeiT (+distilled), DeiT-III, DINOv2, SigLIP, MAE."""

    name = "vit"
    model_classes = ("VisionTransformer",)


class BeitFamily(ModelFamily):
    """timm ``Beit`` (relative position bias inside attention; the MLPs are plain)."""

    name = "beit"
    model_classes = ("Beit",)


class EvaFamily(ModelFamily):
    """timm ``Eva`` (EVA-02: SwiGLU MLPs, packed or not, rotary position embeddings)."""

    name = "eva"
    model_classes = ("Eva",)


#: the model families pathprune knows, by name
MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family", param="model")


def register_family(family: ModelFamily, help: str = "", replace: bool = False) -> ModelFamily:
    """Register an adapter for another family of models (matched in registration order)."""
    return MODEL_FAMILIES.register(family.name, family, help=help or (type(family).__doc__ or "").strip(),
                                   replace=replace)


def list_families() -> list[str]:
    """Names of the supported model families."""
    return MODEL_FAMILIES.names()


register_family(VisionTransformerFamily())
register_family(BeitFamily())
register_family(EvaFamily())


def find_family(model: nn.Module) -> ModelFamily | None:
    """The adapter of the model's family, or None."""
    for name in MODEL_FAMILIES:
        family = MODEL_FAMILIES.get(name)
        if family.matches(model):
            return family
    return None


def family_of(model: nn.Module) -> ModelFamily:
    """The adapter of the model's family (ModelError naming the model's class if there is none)."""
    family = find_family(model)
    if family is None:
        raise ModelError(f"'{type(model).__name__}' models are not supported (supported timm families: "
                         f"{', '.join(list_families())}; see pathprune.models.register_family)")
    return family


# --------------------------------------------------------------------------------------------
# the layout questions every stage asks


def mlp_layouts(model: nn.Module) -> list[MlpLayout]:
    """Every block's MLP layout, in order."""
    return family_of(model).mlps(model)


def mlp_blocks(model: nn.Module) -> list[nn.Module]:
    """The MLP module of every transformer block, in order."""
    return [layout.module for layout in mlp_layouts(model)]


def mlp_widths(model: nn.Module) -> list[int]:
    """Number of MLP neurons per block."""
    return [layout.width for layout in mlp_layouts(model)]


def mlp_output_scales(model: nn.Module) -> list[torch.Tensor | None]:
    """Per block, the layer-scale vector that multiplies the MLP output before the residual addition
    (timm ``ls2.gamma`` or BEiT/EVA ``gamma_2``), or None where there is none (scale 1)."""
    return residual_scales(model, 2)


def residual_scales(model: nn.Module, branch: int) -> list[torch.Tensor | None]:
    """Per block, the layer-scale vector of residual branch `branch` (1: attention, 2: MLP; timm
    ``ls<branch>.gamma`` or BEiT/EVA ``gamma_<branch>``), or None where there is none (scale 1)."""
    scales: list[torch.Tensor | None] = []
    for block in family_of(model).blocks(model):
        gamma = getattr(getattr(block, f"ls{branch}", None), "gamma", None)
        if gamma is None:
            gamma = getattr(block, f"gamma_{branch}", None)
        scales.append(gamma.detach() if isinstance(gamma, torch.Tensor) else None)
    return scales


def set_mlp_widths(model: nn.Module, widths: Sequence[int]) -> None:
    """Rebuild every block's MLP at the given widths (uninitialised weights; load a state dict next)."""
    family_of(model).set_mlp_widths(model, widths)


def model_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the images the model was built for."""
    return family_of(model).input_shape(model)


def example_input(model: nn.Module) -> torch.Tensor:
    """A zero input of the size the model was built for ([1, C, H, W]), on the model's device/dtype."""
    param = next(model.parameters())
    return torch.zeros(1, *model_input_shape(model), dtype=param.dtype, device=param.device)


def default_token_scope(model: nn.Module) -> str:
    """The token scope a search uses by default for this model."""
    return family_of(model).default_token_scope(model)


def token_range(model: nn.Module, scope: str) -> tuple[int, int]:
    """Token positions [start, stop) that a token scope covers."""
    family = family_of(model)
    num_prefix = family.num_prefix_tokens(model)
    num_tokens = num_prefix + family.num_patches(model)
    if scope == "cls":
        if not family.has_class_token(model):
            raise ConfigError("'cls' needs a class token, and this model has none; use patches", param="token")
        return 0, 1
    if scope == "patches":
        return num_prefix, num_tokens
    if scope == "all":
        return 0, num_tokens
    raise ConfigError(f"'{scope}': choose one of {', '.join(TOKEN_SCOPES)}", param="token")


#: a function of a block's MLP activations ([B, N, F]); a returned tensor replaces them
MlpInputHook = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def mlp_input_hooks(model: nn.Module, hooks: dict[int, MlpInputHook]) -> Iterator[None]:
    """Run ``hooks[l](activations)`` on block l's MLP neuron activations during forward passes here."""
    layouts = mlp_layouts(model)
    handles = []
    for layer, fn in hooks.items():
        def pre_hook(module, args, fn=fn):
            out = fn(args[0])
            return None if out is None else (out,)

        handles.append(layouts[layer].site.register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def dependency_graph(model: nn.Module):
    """torch-pruning's dependency graph of the model (traced on an example input; the model's
    train/eval modes are restored afterwards: torch-pruning leaves it in eval mode)."""
    import torch_pruning as tp

    from .borrow import borrowed

    with warnings.catch_warnings(), borrowed(model, train=model.training) as traced:
        warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
        return tp.DependencyGraph().build_dependency(traced, example_inputs=example_input(traced), verbose=False)


def count_ops_and_params(model: nn.Module) -> tuple[int, int]:
    """(MACs by :func:`pathprune.models.macs.count_macs`, the one MAC definition; parameters from
    torch-pruning's counter) of one example input."""
    import torch_pruning as tp

    from .macs import count_macs

    with torch.no_grad():
        _, params = tp.utils.count_ops_and_params(model, example_input(model))
    return count_macs(model, example_input(model), attention_shapes(model)), int(params)


def attention_shapes(model: nn.Module) -> list[Any]:
    """Every block's attention as ``module``, ``num_heads``, ``head_dim`` (for counting its Q K^T and A V
    products), whether or not its heads could be removed (BEiT, EVA-02 too)."""
    from types import SimpleNamespace

    out = []
    for block in family_of(model).blocks(model):
        attn = getattr(block, "attn", None)
        heads = getattr(attn, "num_heads", None)
        proj = getattr(attn, "proj", None)
        if attn is None or not heads or not isinstance(proj, nn.Linear):
            continue
        head_dim = getattr(attn, "head_dim", None) or proj.in_features // int(heads)
        out.append(SimpleNamespace(module=attn, num_heads=int(heads), head_dim=int(head_dim)))
    return out


# --------------------------------------------------------------------------------------------
# resuming a forward pass at a block (the engine's prefix reuse)


def can_resume_at_block(model: nn.Module) -> bool:
    """Whether :func:`forward_from_block` reproduces the model's forward: timm ``VisionTransformer``
    (and subclasses that keep its forward) whose blocks take the residual stream alone."""
    from timm.models.vision_transformer import VisionTransformer

    return (isinstance(model, VisionTransformer) and type(model).forward is VisionTransformer.forward
            and type(model).forward_features is VisionTransformer.forward_features
            and not getattr(model, "grad_checkpointing", False))


def forward_from_block(model: nn.Module, hidden: torch.Tensor, start: int) -> torch.Tensor:
    """Logits of a forward pass resumed at block `start` from its input `hidden` (the residual stream)."""
    for block in family_of(model).blocks(model)[start:]:
        hidden = block(hidden)
    return model.forward_head(model.norm(hidden))


@contextlib.contextmanager
def block_input_hook(model: nn.Module, layer: int, fn: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Context: call ``fn(residual stream)`` with the input of block `layer` during forward passes."""
    handle = family_of(model).blocks(model)[layer].register_forward_pre_hook(lambda module, args: fn(args[0]))
    try:
        yield
    finally:
        handle.remove()
