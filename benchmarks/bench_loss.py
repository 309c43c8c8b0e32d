"""Forward + backward time and peak memory of `correlation_loss` beside a naive version that forms C and A.

    python benchmarks/bench_loss.py            # the paper's shape: B=24, N=3, P=150, D=768, 780 frames (15.6 s)
    python benchmarks/bench_loss.py --tiny     # a seconds-long smoke run

Both versions pool and standardise identically; the naive one then materialises the D x D matrices C and A for
every (layer, pooled position), as the reference implementation's formulation implies. Times are medians of
interleaved repeats in one process; peak memory is the growth of the resident set of a fresh process running one
forward + backward. Both numbers come from this machine, now: compare the ratio, not the absolute figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from hf_corrdistill.losses import STD_EPS, correlation_loss, pool_valid_frames

DEFAULTS = dict(lambda_cross=5e-5, lambda_self=5e-6, diag_scale=10.0, cross_scale=100.0, self_scale=50000.0)


def naive_correlation_loss(student, teacher, mask, positions):
    """Same value as correlation_loss(style="batch", weighting="fixed"), forming C and A explicitly."""
    batch, layers, _, features = student.shape
    pooled_s = pool_valid_frames(student, mask, positions).permute(1, 2, 0, 3).reshape(-1, batch, features)
    pooled_t = pool_valid_frames(teacher, mask, positions).permute(1, 2, 0, 3).reshape(-1, batch, features)
    s_hat = (pooled_s - pooled_s.mean(1, keepdim=True)) / (pooled_s.std(1, keepdim=True) + STD_EPS)  # (NP, B, D)
    t_hat = (pooled_t - pooled_t.mean(1, keepdim=True)) / (pooled_t.std(1, keepdim=True) + STD_EPS)
    c = s_hat.transpose(1, 2) @ t_hat / (batch - 1)  # (NP, D, D)
    a = s_hat.transpose(1, 2) @ s_hat / (batch - 1)  # (NP, D, D)
    off = ~torch.eye(features, dtype=torch.bool)
    on = (torch.diagonal(c, dim1=1, dim2=2) - 1).square().sum(-1)  # (NP,)
    cross = c.square().masked_fill(~off, 0).sum((1, 2))
    selfc = a.square().masked_fill(~off, 0).sum((1, 2))
    cosine = -torch.nn.functional.logsigmoid(torch.nn.functional.cosine_similarity(pooled_s, pooled_t, dim=-1))
    return (on.mean() / DEFAULTS["diag_scale"] + DEFAULTS["lambda_cross"] * cross.mean() / DEFAULTS["cross_scale"]
            + DEFAULTS["lambda_self"] * selfc.mean() / DEFAULTS["self_scale"] + cosine.mean())


def gram_loss(student, teacher, mask, positions):
    return correlation_loss(student, teacher, mask, pool_positions=positions, **DEFAULTS).loss


VARIANTS = {"gram": gram_loss, "naive": naive_correlation_loss}


def make_inputs(batch, layers, frames, features, seed=0):
    """Correlated student and teacher; a quarter of the utterances padded to 80% of the crop, as in training."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, layers, frames, features, generator=g)
    student = (0.5 * teacher + torch.randn(batch, layers, frames, features, generator=g)).requires_grad_(True)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    mask[: batch // 4, int(0.8 * frames) :] = False
    return student, teacher, mask


def step(name, student, teacher, mask, positions):
    student.grad = None
    loss = VARIANTS[name](student, teacher, mask, positions)
    loss.backward()
    return loss.detach()


def _status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_memory_child(name, shape, positions):
    """In a fresh process: growth of the peak resident set (MB) during one forward + backward.

    The parent sets MALLOC_MMAP_THRESHOLD_ so that large blocks are always returned to the system when freed, and
    the peak is reset (Linux clear_refs) once the inputs exist: the figure is what the loss itself needs.
    """
    student, teacher, mask = make_inputs(*shape)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    before = _status_kb("VmRSS")
    step(name, student, teacher, mask, positions)
    return (_status_kb("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small shapes for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (4, 2, 40, 16) if args.tiny else (24, 3, 780, 768)
    positions = 10 if args.tiny else 150
    if args.memory_child:
        print(json.dumps({"peak_mb": peak_memory_child(args.memory_child[0], shape, positions)}))
        return

    torch.manual_seed(0)
    student, teacher, mask = make_inputs(*shape)
    losses = {name: step(name, student, teacher, mask, positions) for name in VARIANTS}  # warm-up
    rel = abs(losses["gram"] - losses["naive"]).item() / abs(losses["naive"]).item()
    times = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name in VARIANTS:
            started = time.perf_counter()
            step(name, student, teacher, mask, positions)
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    memory = {}
    for name in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, *(["--tiny"] if args.tiny else []), "--memory-child", name],
            capture_output=True, text=True, check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        )
        memory[name] = json.loads(child.stdout.strip().splitlines()[-1])["peak_mb"]

    b, n, f, d = shape
    print(f"correlation_loss forward+backward, B={b} N={n} F={f} D={d} P={positions}, padding mask, float32, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'variant':<8} {'time (s)':>10} {'peak memory (MB)':>18}")
    for name in VARIANTS:
        print(f"{name:<8} {median[name]:>10.3f} {memory[name]:>18.0f}")
    print(f"speed-up (naive / gram): {median['naive'] / median['gram']:.1f}x; "
          f"memory ratio: {memory['naive'] / max(memory['gram'], 1e-9):.1f}x; "
          f"relative difference of the losses: {rel:.1e}")


if __name__ == "__main__":
    main()
