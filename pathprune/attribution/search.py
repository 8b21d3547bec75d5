"""The joint-attribution engine: layer-progressive search of influential neuron paths.

A *neuron* (l, j) is input feature j of block l's second MLP layer (``blocks[l].mlp.fc2``), i.e. the
MLP activation. *Scaling* a set of neurons by alpha replaces their activations at the scope's tokens
by ``alpha * a_clean`` during the forward pass; everything else is computed normally from there on
(``reference`` form: the other neurons of the intervened layers stay frozen at their clean values at
the scope's tokens, as the published code does).

Performance design (docs/design.md, section 3): one clean forward gives every layer's activations; the
interventions are a custom autograd Function that overwrites only the selected entries in place and
returns gradients only for them; one backward per layer gives the gradients of all scaled tensors;
parameters are frozen; the m x B repeated batch is split into chunks of at most ``max_batch`` rows.

Additive forms (``paper``): JAS(P + j) = JAS(P) + a_j * IG_j with JAS(P) common to every candidate of
layer l, so the search requests only layer l's gradients; with frozen parameters and path values that
do not require gradients, autograd's backward stops at block l (about (L + 1) / 2 backward passes over
the search instead of L). The forward of layer l's pass also resumes at block l - 1 from the block
input stored by layer l - 1's pass (timm ViTs; identical, since both passes scale only P_{<l-1} before
it), so the forwards sum to about (L + 3) / 2 passes too. The final path's JAS is computed once: exactly
by completeness (``scoring="exact"``, complete forms) or by one full pass. Adaptive refinement
(``refine_steps``) re-scores a layer with more nodes only for the images whose choice is ambiguous
within the rule's error estimate (``_refined_scores``). The previous full-backward search (gradients
of the path and of layer l, choice by JAS(P + j)) stays available as
``NeuronPathSearch(..., full_backward=True)``, for benchmarks and as a test oracle; both choose the
same paths and record the same candidate scores (it never refines).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..models.adapters import block_input_hook, can_resume_at_block, forward_from_block, mlp_widths, token_range
from ..models.borrow import borrowed
from .forms import JAS_FORMS, PathTerms
from .interventions import _Intervention, capture_activations, intervene
from .path_config import DTYPES, PathConfig
from .quadrature import null_rule, quadrature_nodes

@dataclass
class PathResult:
    """Paths of a batch of B images over L layers (per-layer lists allow per-block widths)."""

    target: torch.Tensor  # [B] class whose objective is attributed
    pred: torch.Tensor  # [B] predicted class
    prob: torch.Tensor  # [B] clean softmax probability of the target
    path: torch.Tensor  # [B, L, K] JAS path neurons
    path_jas: torch.Tensor  # [B] JAS of the final path alone
    act_path: torch.Tensor  # [B, L, K] activation path (top clean activations)
    act_path_jas: torch.Tensor  # [B]
    # L x [B, F_l]: each candidate's score at its layer. Additive forms (paper): the marginal term
    # a_j * IG_j = JAS(P + j) - JAS(P) (statistics format 2); reference form: JAS(P + j).
    candidate_jas: list[torch.Tensor] = field(default_factory=list)
    clean_act: list[torch.Tensor] = field(default_factory=list)  # L x [B, F_l]: scope-summed activation
    # [B, L] bool: the layers whose choice was re-scored with the refinement rule (None: refinement off)
    refined: torch.Tensor | None = None


@dataclass
class CleanPass:
    """A batch after its clean forward (inputs to every attribution of that batch)."""

    images: torch.Tensor  # [B, C, H, W] on the engine's device
    target: torch.Tensor  # [B]
    pred: torch.Tensor  # [B]
    prob: torch.Tensor  # [B] clean probability of the target
    logits: torch.Tensor  # [B, classes]
    clean: list[torch.Tensor]  # L x [B, T, F_l] activations at the scope's tokens


class NeuronPathSearch:
    """Find each image's influential neuron path in a timm ViT (captum-shaped: one `attribute()` call
    per batch). The caller's model is borrowed for each call and given back exactly as it was
    (device, dtype, mode, ``requires_grad``); ``with search.placed():`` keeps it on the search's
    device across many calls.

    Example::

        >>> import torch
        >>> from pathprune import NeuronPathSearch, PathConfig, create_model
        >>> model, spec = create_model("digits")
        >>> search = NeuronPathSearch(model, PathConfig(steps=4))
        >>> result = search.attribute(torch.zeros(2, 1, 8, 8), target=torch.tensor([0, 1]))
        >>> result.path.shape  # [images, layers, topk]
        torch.Size([2, 6, 1])
    """

    def __init__(self, model: nn.Module, config: PathConfig | None = None, device: torch.device | str = "cpu",
                 *, compile: bool = False, full_backward: bool = False):
        """`compile`: torch.compile the attention modules while the model is placed (same results;
        see benchmarks/results_engine.md for when it pays). `full_backward`: the previous search that
        takes the path's gradients at every layer too (a benchmark variant and test oracle; additive
        forms only differ in cost)."""
        self.config = (config or PathConfig()).validate()
        self.compile = bool(compile)
        self.full_backward = bool(full_backward)
        self.device = torch.device(device)
        self.model = model
        self.form = JAS_FORMS.get(self.config.jas)
        self.t0, self.t1 = token_range(model, self.config.token)
        self.alphas, self.weights = quadrature_nodes(self.config.quadrature, self.config.steps)
        self.widths = mlp_widths(model)
        if self.config.topk > min(self.widths):
            raise ConfigError(f"{self.config.topk} exceeds the narrowest MLP ({min(self.widths)} neurons)",
                              param="topk")
        self.freeze = self.form.freeze
        dtype = getattr(torch, self.config.dtype)
        self._autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32
                          else contextlib.nullcontext())
        self._placed_depth = 0
        self._chunk_rows: dict[tuple[int, int], int] = {}
        self._resumable = can_resume_at_block(model)
        self._exact_scoring = self.config.scoring == "exact" and self.form.complete
        self._refine = None
        if self.config.refining and not self.full_backward:  # (the full-backward oracle: never refined)
            self._null = null_rule(self.alphas)
            self._refine = quadrature_nodes(self.config.quadrature, self.config.refine_steps)

    @contextlib.contextmanager
    def placed(self) -> Iterator[nn.Module]:
        """Keep the model on the search's device, in eval mode with frozen parameters, meanwhile."""
        if self._placed_depth:
            self._placed_depth += 1
            try:
                yield self.model
            finally:
                self._placed_depth -= 1
            return
        with borrowed(self.model, device=self.device, requires_grad=False) as model, \
                (compiled_attention(model) if self.compile else contextlib.nullcontext()):
            self._placed_depth = 1
            try:
                yield model
            finally:
                self._placed_depth = 0

    def chunk_rows(self, batch: int = 1, nodes: int | None = None) -> int:
        """Rows (images x nodes) per forward/backward: ``max_batch`` if set, else the most that fit the
        memory budget (:mod:`pathprune.memory`) next to what a batch of `batch` images holds throughout
        (its clean activations at the scope's tokens, the stored block inputs of all `nodes` x `batch`
        rows). Raises MemoryBudgetError when one row does not fit."""
        if self.config.max_batch:
            return self.config.max_batch
        nodes = nodes or max(self.config.steps, self.config.refine_steps if self._refine is not None else 0)
        key = (int(batch), int(nodes))
        if key not in self._chunk_rows:
            from ..memory import activation_shape, auto_batch

            shape = activation_shape(self.model)
            tokens = self.t1 - self.t0  # clean activations of every layer, three layers' accumulators
            scope = tokens * (sum(self.widths) + 3 * max(self.widths)) * 4
            stored = nodes * shape.tokens * shape.width * 4  # a block's input per row (prefix reuse)
            self._chunk_rows[key] = auto_batch(self.model, "backward", device=self.device,
                                               what=f"the path search of a batch of {batch} image(s)",
                                               fixed_extra=batch * (scope + stored), unit="one row (image x node)",
                                               # a row's interventions: every layer's values at the scope's
                                               # tokens, scaled and frozen copies
                                               per_sample_extra=2 * tokens * sum(self.widths) * 4,
                                               hint="a smaller `batch_size` holds less")
        return self._chunk_rows[key]

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    # -- public -----------------------------------------------------------------------------

    @torch.no_grad()
    def clean_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits [B, C] and every layer's activations at the scope's tokens (L x [B, T, F_l])."""
        with self.placed(), capture_activations(self.model, self.t0, self.t1) as acts, self._autocast:
            logits = self.model(images.to(self.device))
        return logits.float(), list(acts)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor | None) -> "CleanPass":
        """Clean forward of a batch: target classes, predictions and every layer's activations."""
        images = images.to(self.device)
        logits, clean = self.clean_forward(images)
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        if self.config.target == "pred" or labels is None:  # no labels: the predicted class
            target = pred
        else:
            target = labels.to(self.device).long()
        if int(target.max()) >= logits.shape[1] or int(target.min()) < 0:
            raise ConfigError(f"label {int(target.max())} is out of range for a model with {logits.shape[1]} classes")
        prob = probs.gather(1, target[:, None])[:, 0]
        return CleanPass(images, target, pred, prob, logits, clean)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None) -> PathResult:
        """Search the JAS path of every image of `inputs` [B, C, H, W] and score it and the activation path.

        `target`: the classes whose objective is attributed ([B] tensor); None attributes the
        predicted class (also what ``PathConfig(target="pred")`` does).
        """
        with self.placed():
            return self._attribute(inputs, target)

    def _attribute(self, images: torch.Tensor, labels: torch.Tensor | None) -> PathResult:
        cp = self.prepare(images, labels)
        images, target, pred, prob, clean = cp.images, cp.target, cp.pred, cp.prob, cp.clean

        k = self.config.topk
        path: list[torch.Tensor] = []
        candidates: list[torch.Tensor] = []
        marginal = self.form.marginal
        prefix: dict = {}  # block inputs reused by the next layer's pass (paper form)
        refined: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if self._refine is not None:
                score = recorded = self._refined_scores(images, target, clean, path, layer, prefix, refined)
            elif marginal is not None and not self.full_backward:
                # JAS(P + j) = JAS(P) + a_j IG_j: only layer l's gradients (the backward stops at block l)
                grads = self.integrated_gradients(images, target, clean, path, full_layer=layer,
                                                  path_gradients=False, prefix=prefix)
                score = recorded = marginal(clean[layer], grads[layer])
            else:
                grads = self.integrated_gradients(images, target, clean, path, full_layer=layer)
                score = self._candidate_scores(clean, path, grads, layer)
                recorded = marginal(clean[layer], grads[layer]) if marginal is not None else score
            candidates.append(recorded.cpu())
            path.append(torch.topk(score, k, dim=1).indices)

        clean_sum = [a.sum(1) for a in clean]  # [B, F_l] scope-summed activations
        act_path = [torch.topk(a, k, dim=1).indices for a in clean_sum]
        if self._exact_scoring:  # F(x) is the clean pass's: one forward per path, no backward
            f_clean = self._objective(cp.logits, target)
            path_jas = self.exact_path_jas(images, target, path, f_clean)
            act_path_jas = self.exact_path_jas(images, target, act_path, f_clean)
        else:
            path_jas = self.path_jas(images, target, clean, path)
            act_path_jas = self.path_jas(images, target, clean, act_path)
        return PathResult(target=target.cpu(), pred=pred.cpu(), prob=prob.cpu(),
                          path=torch.stack(path, 1).cpu(), path_jas=path_jas.cpu(),
                          act_path=torch.stack(act_path, 1).cpu(), act_path_jas=act_path_jas.cpu(),
                          candidate_jas=candidates, clean_act=[a.cpu() for a in clean_sum],
                          refined=torch.stack(refined, 1).cpu() if refined else None)

    def _refined_scores(self, images, target, clean, path, layer, prefix, refined) -> torch.Tensor:
        """Layer `layer`'s marginal scores [B, F] by the search's rule, re-scored by the refinement rule
        (``refine_steps`` nodes) for the images whose top-K could change within the error estimate.

        The estimate of candidate j is e_j = |null rule applied to j's integrand| (:func:`null_rule`,
        from the same passes); the top-K set S stands when min over S of (s_j - tol e_j) exceeds max
        over the others of (s_j + tol e_j). The other images get the refinement rule's scores
        (a pass of their rows from block 0) and so the choice a full search at that rule would make
        given the same path before the layer; the greedy search continues from it."""
        grads, spread = self._integrated_gradients(images, target, clean, path, full_layer=layer,
                                                   path_gradients=False, prefix=prefix, null=self._null)
        marginal = self.form.marginal
        score = marginal(clean[layer], grads[layer])
        tol = self.config.refine_tol
        ambiguous = (self._ambiguous(score, marginal(clean[layer], spread).abs() * tol) if tol != float("inf")
                     else torch.ones(len(score), dtype=torch.bool, device=score.device))  # inf: every choice
        refined.append(ambiguous)
        if bool(ambiguous.any()):
            idx = ambiguous.nonzero()[:, 0]
            fine, _ = self._integrated_gradients(images[idx], target[idx], [c[idx] for c in clean],
                                                 [p[idx] for p in path], full_layer=layer, path_gradients=False,
                                                 rule=self._refine)
            score = score.clone()
            score[idx] = marginal(clean[layer][idx], fine[layer])
        return score

    def _ambiguous(self, score: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """[B] bool: the top-K set of `score` [B, F] is not separated from the rest by the error bounds
        (strictly: exact ties with a zero error, e.g. candidates without influence, stay as they are)."""
        top = torch.topk(score, self.config.topk, dim=1).indices
        low = (score - error).gather(1, top).min(1).values
        high = (score + error).scatter(1, top, float("-inf")).max(1).values
        return low < high

    def path_jas(self, images: torch.Tensor, target: torch.Tensor, clean: list[torch.Tensor],
                 path: list[torch.Tensor]) -> torch.Tensor:
        """JAS of a given path alone (only its neurons scaled), per image [B]: exact by completeness
        for complete forms with ``scoring="exact"`` (:meth:`exact_path_jas`), else by the quadrature."""
        if self._exact_scoring:
            return self.exact_path_jas(images, target, path)
        with self.placed():
            grads = self.integrated_gradients(images.to(self.device), target.to(self.device), clean,
                                               [p.to(self.device) for p in path], full_layer=None)
        return self.form.score(self._terms(clean, path, grads, len(path)))

    @torch.no_grad()
    def exact_path_jas(self, images: torch.Tensor, target: torch.Tensor, path: list[torch.Tensor],
                       clean_objective: torch.Tensor | None = None) -> torch.Tensor:
        """F(x) - F(x with the path's neurons zeroed at the scope's tokens), per image [B]: the exact
        integral that a complete form's quadrature approximates (the integrand is dF/dalpha along the
        path's scaling), from two forwards of the B images instead of m forward+backward passes
        (one when `clean_objective`, F(x) [B], is given)."""
        from .interventions import manipulated_logits

        with self.placed():
            images, target = images.to(self.device), target.to(self.device)
            path = [p.to(self.device) for p in path]
            with self._autocast:
                clean = (self._objective(self.model(images).float(), target) if clean_objective is None
                         else clean_objective.to(self.device))
                zeroed = self._objective(manipulated_logits(self.model, images, path, 0.0, self.t0, self.t1),
                                         target)
        return clean - zeroed

    @torch.no_grad()
    def completeness_delta(self, inputs: torch.Tensor, result: PathResult) -> torch.Tensor:
        """F(x) - F(x with the path zeroed) - JAS(path), per image [B] (paper form: ~0 with enough nodes;
        0 up to rounding with ``scoring="exact"``, which computes the JAS that way).

        F is the configured objective of each image's attributed class (``result.target``).
        """
        from .interventions import manipulated_logits

        with self.placed():
            images = inputs.to(self.device)
            target = result.target.to(self.device)
            path = [p.to(self.device) for p in result.path.unbind(1)]
            with self._autocast:
                clean = self._objective(self.model(images).float(), target)
                zeroed = self._objective(manipulated_logits(self.model, images, path, 0.0, self.t0, self.t1),
                                         target)
        return (clean - zeroed).cpu() - result.path_jas

    # -- internals --------------------------------------------------------------------------

    def _path_terms(self, clean, path, grads, upto):
        """(sum of gradients, sum of activations, JAS) of the path's neurons in layers < upto."""
        terms = self._terms(clean, path, grads, upto)
        return terms.g, terms.a, self.form.score(terms)

    def _terms(self, clean, path, grads, upto) -> PathTerms:
        """Sums over the path's neurons (layers < upto) of gradients, activations and products."""
        batch = clean[0].shape[0]
        g_sum = torch.zeros(batch, device=self.device)
        a_sum = torch.zeros(batch, device=self.device)
        ag_sum = torch.zeros(batch, device=self.device)
        for layer in range(upto):
            idx = path[layer][:, None, :].expand(-1, clean[layer].shape[1], -1)
            a = clean[layer].gather(2, idx)
            g = grads[layer]
            g_sum += g.sum((1, 2))
            a_sum += a.sum((1, 2))
            ag_sum += (a * g).sum((1, 2))
        return PathTerms(g_sum, a_sum, ag_sum)

    def _candidate_scores(self, clean, path, grads, layer) -> torch.Tensor:
        """JAS(P + j) for every neuron j of `layer` [B, F_l]."""
        return self.form.candidates(self._terms(clean, path, grads, layer), clean[layer], grads[layer])

    def integrated_gradients(self, images: torch.Tensor, target: torch.Tensor, clean: list[torch.Tensor],
                             path: list[torch.Tensor], full_layer: int | None,
                             path_gradients: bool = True, prefix: dict | None = None) -> dict[int, torch.Tensor]:
        """sum_i w_i dF/d(activation) at alpha_i, scaling the path's neurons and optionally a whole layer.

        `path` lists [B, K] neuron ids for layers 0..len(path)-1; `full_layer` scales every neuron
        of that layer too. Returns layer -> [B, T, K] (path layers) or [B, T, F] (the full layer).
        With ``path_gradients=False`` (needs `full_layer`) the path is still scaled but only the full
        layer's gradients are taken: nothing before that block requires gradients, so the backward
        stops there. `prefix` (a dict the caller keeps across the layers of one search, with
        ``path_gradients=False``): the input of block `full_layer` is stored in it, and a pass for
        layer l resumes at block l - 1 from the input stored by the pass for layer l - 1 (identical:
        both scale only P_{<l-1} before it), so blocks 0..l-2 are not recomputed. Memory: one block's
        input for the m x B rows.
        Multiply by the clean activations for integrated gradients (the `paper` form's terms).
        """
        return self._integrated_gradients(images, target, clean, path, full_layer, path_gradients, prefix)[0]

    def _integrated_gradients(self, images, target, clean, path, full_layer, path_gradients=True, prefix=None,
                              rule=None, null=None) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """:meth:`integrated_gradients` with another rule (`rule` = (alphas, weights)) and, given null-rule
        weights `null` [m] on the rule's nodes, also sum_i null_i dF/d(activation of full_layer) at alpha_i."""
        batch = images.shape[0]
        alphas, weights = rule if rule is not None else (self.alphas, self.weights)
        m = len(alphas)
        rows_total = m * batch
        chunk = self.config.max_batch or min(rows_total, self.chunk_rows(batch, m))
        alphas = alphas.to(self.device)
        weights = weights.to(self.device)
        spread = None
        if null is not None:  # the gradients come weighted by w_i: re-weight them by n_i / w_i
            null_ratio = (null.double() / weights.double().cpu()).float().to(self.device)
            spread = torch.zeros_like(clean[full_layer])
        tokens = self.t1 - self.t0
        selected = {layer: clean[layer].gather(2, p[:, None, :].expand(-1, tokens, -1))
                    for layer, p in enumerate(path)}
        if not path_gradients and full_layer is None:
            raise ValueError("path_gradients=False needs a full_layer")
        path_layers = list(range(len(path)))
        layers = path_layers + ([full_layer] if full_layer is not None else [])
        wanted = layers if path_gradients else [full_layer]
        acc = {layer: torch.zeros_like(selected[layer]) for layer in path_layers if path_gradients}
        if full_layer is not None:
            acc[full_layer] = torch.zeros_like(clean[full_layer])

        resume_at = None
        if prefix is not None and not path_gradients and self._resumable:
            if full_layer > 0 and prefix.get("block") == full_layer - 1:
                resume_at = full_layer - 1
            stored_inputs: dict[int, torch.Tensor] = {}
            recorder = lambda start: block_input_hook(  # noqa: E731
                self.model, full_layer, lambda hidden: stored_inputs.__setitem__(start, hidden.detach()))
        else:
            prefix, recorder = None, lambda start: contextlib.nullcontext()  # noqa: E731

        for start in range(0, rows_total, chunk):
            rows = torch.arange(start, min(start + chunk, rows_total), device=self.device)
            img, step = rows % batch, rows // batch  # alpha-major order, as published
            alpha = alphas[step][:, None, None]
            plan: dict[int, _Intervention] = {}
            leaves = []
            for layer in layers:
                if layer == full_layer:
                    values = clean[layer][img] * alpha
                    index = None
                else:
                    values = selected[layer][img] * alpha
                    index = path[layer][img]
                if layer in wanted:
                    values.requires_grad_(True)
                    leaves.append(values)
                frozen = clean[layer][img] if (self.freeze and index is not None) else None
                plan[layer] = _Intervention(values, index, frozen)
            with self.placed(), torch.enable_grad(), intervene(self.model, plan, self.t0, self.t1), \
                    recorder(start), self._autocast:
                if resume_at is None:
                    logits = self.model(images[img])
                else:
                    logits = forward_from_block(self.model, prefix["inputs"][start], resume_at)
                objective = self._objective(logits.float(), target[img])
                total = (objective * weights[step]).sum()
                grads = torch.autograd.grad(total, leaves)
            for layer, g in zip(wanted, grads):
                acc[layer].index_add_(0, img, g.float())
            if spread is not None:
                spread.index_add_(0, img, grads[wanted.index(full_layer)].float() * null_ratio[step][:, None, None])
        if prefix is not None:
            prefix["block"], prefix["inputs"] = full_layer, stored_inputs
        return acc, spread

    def _objective(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.objective == "prob":
            return logits.softmax(-1).gather(1, target[:, None])[:, 0]
        return logits.gather(1, target[:, None])[:, 0]

    def with_config(self, **changes) -> "NeuronPathSearch":
        """A search over the same model with some settings changed."""
        return NeuronPathSearch(self.model, replace(self.config, **changes), self.device, compile=self.compile,
                                full_backward=self.full_backward)


@contextlib.contextmanager
def compiled_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Context: ``torch.compile`` every attention module of `model` in place (``Module.compile``), and
    give them back uncompiled afterwards.

    Only the attention modules are compiled: the MLP activations carry the search's hooks, which
    change at every pass and would make a compiled block recompile each time. Results are those of
    the uncompiled model (within float tolerance of the fused kernels)."""
    attention = [module for name, module in model.named_modules()
                 if name.rsplit(".", 1)[-1] == "attn" and hasattr(module, "qkv")]
    for module in attention:
        module.compile(dynamic=True)
    try:
        yield model
    finally:
        for module in attention:
            module._compiled_call_impl = None


