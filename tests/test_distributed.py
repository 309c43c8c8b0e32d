"""correlation_sync=global: two processes (gloo, DDP) give the loss and the gradients of one process on the whole
batch, in every style and weighting, float64."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from hf_corrdistill.losses import correlation_loss
from hf_corrdistill.training.distributed import gather_rows

WORLD, PER_RANK, LAYERS, FRAMES, WIDTH = 2, 3, 2, 12, 6
CASES = {  # name: loss settings (off-diagonal weights raised so that every term moves the gradients)
    "batch-fixed": dict(style="batch", weighting="fixed"),
    "batch-snr": dict(style="batch", weighting="snr"),
    "frames-snr-reference": dict(style="frames", weighting="snr-reference"),
    "frames-fixed": dict(style="frames", weighting="fixed"),
}
COMMON = dict(pool_positions=4, lambda_cross=0.5, lambda_self=0.5, cross_scale=1.0, self_scale=1.0)


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = WORLD * PER_RANK
    mask = torch.arange(FRAMES)[None, :] < torch.tensor([12, 9, 7, 12, 5, 10])[:, None]  # (B, F): padding in both
    return {
        "audio": torch.randn(batch, LAYERS, FRAMES, WIDTH, generator=g, dtype=torch.float64),
        "teacher": torch.randn(batch, LAYERS, FRAMES, WIDTH, generator=g, dtype=torch.float64),
        "mask": mask,
        "student_snr": torch.tensor([12.0, 15.0, 30.0, 11.0, 19.0, 25.0], dtype=torch.float64),
        "teacher_snr": torch.tensor([14.0, 10.5, 22.0, 16.0, 13.0, 40.0], dtype=torch.float64),
        "weight": torch.randn(WIDTH, WIDTH, generator=g, dtype=torch.float64),
    }


def _loss_and_grad(data: dict, rows: slice, gather=None, wrap=lambda m: m) -> dict[str, dict[str, torch.Tensor]]:
    results = {}
    for name, case in CASES.items():
        projection = torch.nn.Linear(WIDTH, WIDTH, bias=False, dtype=torch.float64)
        projection.weight.data.copy_(data["weight"])
        model = wrap(projection)
        student = model(data["audio"][rows])  # (B, N, F, D): the "student" is a projection of fixed inputs
        out = correlation_loss(student, data["teacher"][rows], data["mask"][rows], **case, **COMMON,
                               student_snr=data["student_snr"][rows], teacher_snr=data["teacher_snr"][rows],
                               gather=gather)
        out.loss.backward()
        results[name] = {"loss": out.loss.detach(), "grad": projection.weight.grad.clone()}
    return results


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = _inputs()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = _loss_and_grad(data, rows, gather_rows, DistributedDataParallel)
        try:  # unequal shapes must be a clear error, not a hang
            gather_rows(torch.zeros(rank + 1, 3))
        except ValueError as error:
            results["mismatch"] = str(error)
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_global_batch_equals_one_process_on_the_concatenated_batch(two_processes, case):
    reference = _loss_and_grad(_inputs(), slice(None))[case]
    for rank, results in enumerate(two_processes):
        assert torch.allclose(results[case]["loss"], reference["loss"], rtol=1e-10, atol=1e-12), (rank, case)
        assert torch.allclose(results[case]["grad"], reference["grad"], rtol=1e-9, atol=1e-12), (rank, case)


def test_local_batches_differ_from_the_global_one(two_processes):
    """The check has teeth: each process's half alone gives another loss."""
    data = _inputs()
    half = _loss_and_grad(data, slice(0, PER_RANK))["batch-fixed"]["loss"]
    assert not torch.allclose(half, two_processes[0]["batch-fixed"]["loss"])


def test_unequal_shapes_are_a_clear_error(two_processes):
    assert all("equal per-process shapes" in results["mismatch"] for results in two_processes)


def test_one_process_gather_is_the_identity():
    x = torch.randn(3, 2)
    assert gather_rows(x) is x
