"""Least squares in closed form for re-fitting a linear layer: float64 sums of the normal equations
accumulated over token batches (and over ranks), a ridge solve, and the re-fit itself.

    >>> import torch
    >>> sums = LeastSquaresSums(2, 1, bias=True)
    >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> sums.add(x, x.sum(1, keepdim=True) + 1)
    >>> w, solver = solve_ridge(sums.gram, sums.cross, 0.0)
    >>> [round(float(v), 6) for v in w.reshape(-1)], solver
    ([1.0, 1.0, 1.0], 'cholesky')
"""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import Ranks, all_reduce_sum, broadcast_tensor


class LeastSquaresSums:
    """float64 sums of [X 1]^T [X 1], [X 1]^T Y and Y^T Y over token rows."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        n = in_features + (1 if bias else 0)
        self.bias = bias
        self.gram = torch.zeros(n, n, dtype=torch.float64)
        self.cross = torch.zeros(n, out_features, dtype=torch.float64)
        self.yy = torch.zeros((), dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Add token rows x [..., in], y [..., out]; `weight` (one per row, >= 0): weighted sums."""
        x = x.detach().reshape(-1, x.shape[-1]).double()
        y = y.detach().reshape(-1, y.shape[-1]).double()
        if self.bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)
        wx = x if weight is None else x * weight.reshape(-1, 1).to(x)
        self.gram += (wx.T @ x).cpu()
        self.cross += (wx.T @ y).cpu()
        self.yy += ((y * y).sum() if weight is None else (weight.reshape(-1).to(y) * (y * y).sum(1)).sum()).cpu()
        self.rows += len(x)

    def reduce(self, ranks: Ranks) -> "LeastSquaresSums":
        """Sum the sums over ranks (float64 all-reduce; nothing for one process)."""
        if ranks.distributed:
            rows = torch.tensor([self.rows], dtype=torch.float64)
            self.gram, self.cross, self.yy, rows = all_reduce_sum([self.gram, self.cross, self.yy, rows], ranks)
            self.rows = int(rows.item())
        return self

    def relative_error(self, w: torch.Tensor) -> float:
        """||[X 1] w - Y||^2 / ||Y||^2 from the sums (w: [in(+1), out], float64)."""
        err = (w * (self.gram @ w)).sum() - 2 * (w * self.cross).sum() + self.yy
        return float(err.clamp_min(0) / self.yy.clamp_min(1e-300))


def solve_ridge(gram: torch.Tensor, cross: torch.Tensor, ridge: float, bias: bool = True) -> tuple[torch.Tensor, str]:
    """argmin_w ||X w - Y||^2 + lam ||w_x||^2 from G = X^T X and C = X^T Y (float64), with
    lam = ridge * mean(diag G) over the non-bias rows. Returns (w, solver name)."""
    n = gram.shape[0] - (1 if bias else 0)
    a = gram.clone()
    lam = ridge * float(gram.diagonal()[:n].mean()) if n else 0.0
    a.diagonal()[:n] += lam
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        w = torch.cholesky_solve(cross, chol)
        if torch.isfinite(w).all():
            return w, "cholesky"
    w = torch.linalg.lstsq(a, cross, driver="gelsd").solution
    if torch.isfinite(w).all():
        return w, "lstsq"
    values, vectors = torch.linalg.eigh(a)
    keep = values > values.abs().max() * 1e-12
    inverse = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)), torch.zeros_like(values))
    return vectors @ (inverse[:, None] * (vectors.T @ cross)), "eigh"


def current_weights(fc2: nn.Linear) -> torch.Tensor:
    w = fc2.weight.detach().double().T.cpu()
    if fc2.bias is not None:
        w = torch.cat([w, fc2.bias.detach().double().cpu()[None]], 0)
    return w


def assign_weights(fc2: nn.Linear, w: torch.Tensor) -> None:
    with torch.no_grad():
        n = fc2.in_features
        fc2.weight.copy_(w[:n].T.to(fc2.weight))
        if fc2.bias is not None:
            fc2.bias.copy_(w[n].to(fc2.bias))


def refit_linear(linear: nn.Linear, sums: LeastSquaresSums, ridge: float,
                 ranks: Ranks | None = None) -> tuple[float, float, str]:
    """Replace `linear`'s weights (and bias) by the ridge solution of `sums`; with several ranks every
    rank takes rank 0's solution. Returns (relative error before, after, solver name)."""
    before = sums.relative_error(current_weights(linear))
    w, solver = solve_ridge(sums.gram, sums.cross, ridge, bias=sums.bias)
    if ranks is not None and ranks.distributed:  # the same weights on every rank, whatever its arithmetic
        w = broadcast_tensor(w, ranks)
    assign_weights(linear, w)
    return before, sums.relative_error(current_weights(linear)), solver
