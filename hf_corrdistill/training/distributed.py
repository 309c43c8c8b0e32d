"""Correlations over the global batch of several processes (``correlation_sync: global``).

Every process gathers the samples of all processes (dim 0), computes the same loss on the whole batch and
back-propagates it; the gather's backward sums the processes' gradients for each process's own rows. Data
parallelism then averages parameter gradients over the W processes, which gives each parameter exactly the gradient
of one process computing the loss on the concatenated batch: (1/W) sum_r W dL/dS_r dS_r/dtheta = dL/dtheta.
"""

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (W*B, ...)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # every process holds a copy of the loss: sum them
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every process concatenated along dim 0, in rank order; gradients reach each process's own rows.

    Every process must pass the same shape (pad frames to a common length first); a mismatch is a clear error
    rather than a hang or silent garbage.
    """
    if world_size() == 1:
        return x
    shape = torch.tensor(x.shape, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(other, shape) for other in shapes):
        raise ValueError(f"correlation_sync=global needs equal per-process shapes, got {[s.tolist() for s in shapes]} "
                         "(keep accelerate's even_batches on)")
    if x.dtype == torch.bool:  # not every backend gathers bool
        return _GatherRows.apply(x.to(torch.uint8)).bool()
    return _GatherRows.apply(x)
