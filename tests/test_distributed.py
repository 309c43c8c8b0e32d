"""correlation_sync=global: two processes (gloo, DDP) give the loss and the gradients of one process on the whole
batch, in every style and weighting, float64: `correlation_loss` with `gather_rows`, and the trainer's loss (frames
padded across processes)."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_student_config, tiny_teacher
from torch.nn.parallel import DistributedDataParallel

from hf_corrdistill import CorrDistillForPreTraining
from hf_corrdistill.losses import correlation_loss
from hf_corrdistill.training.distributed import gather_rows
from hf_corrdistill.training.teacher import teacher_targets

WORLD, PER_RANK, LAYERS, FRAMES, WIDTH = 2, 3, 2, 12, 6
CASES = {  # name: loss settings (off-diagonal weights raised so that every term moves the gradients)
    "batch-fixed": dict(style="batch", weighting="fixed"),
    "batch-snr": dict(style="batch", weighting="snr"),
    "batch-snr-reference": dict(style="batch", weighting="snr-reference"),
    "frames-fixed": dict(style="frames", weighting="fixed"),
    "frames-snr": dict(style="frames", weighting="snr"),
    "frames-snr-reference": dict(style="frames", weighting="snr-reference"),
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
    os.environ.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # also what accelerate, in the trainer, reads
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        data = _inputs()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = _loss_and_grad(data, rows, gather_rows, DistributedDataParallel)
        try:  # unequal shapes must be a clear error, not a hang
            gather_rows(torch.zeros(rank + 1, 3))
        except ValueError as error:
            results["mismatch"] = str(error)
        results["trainer"] = _trainer_results(rank, folder)
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


# ---------------------------------------------------------------- the trainer's loss with correlation_sync=global
LENGTHS = ((4000, 3200), (5600, 2400))  # samples per utterance of each process: 12 and 17 frames, padded to 17
SNRS = {"student_snr": (12.0, 15.0, 18.5, 11.0), "teacher_snr": (14.0, 10.5, 16.0, 19.0)}
SETTINGS = dict(weighting="snr", pool_positions=4, lambda_cross=0.5, lambda_self=0.5, cross_scale=1.0,
                self_scale=1.0, weighting_snr_low=11.0, weighting_snr_high=18.0)
STYLES = ("batch", "frames")


def _networks() -> tuple[CorrDistillForPreTraining, torch.nn.Module]:
    """The tiny student (seeded, no dropout) and teacher, float64, in eval mode."""
    torch.manual_seed(0)
    student = CorrDistillForPreTraining(tiny_student_config(hidden_dropout=0.0, attention_dropout=0.0,
                                                            activation_dropout=0.0))
    return student.double().eval(), tiny_teacher().double()


def _process_batch(rank: int) -> dict[str, torch.Tensor]:
    """Process ``rank``'s half of the batch: two utterances padded to the longer, each in two views."""
    g = torch.Generator().manual_seed(rank)
    lengths = torch.tensor(LENGTHS[rank])
    mask = (torch.arange(max(LENGTHS[rank]))[None, :] < lengths[:, None]).long()  # (2, T)
    student_view = torch.randn(mask.shape, generator=g, dtype=torch.float64) * mask  # (2, T)
    teacher_view = student_view + 0.3 * torch.randn(mask.shape, generator=g, dtype=torch.float64) * mask
    rows = slice(2 * rank, 2 * rank + 2)
    snrs = {name: torch.tensor(values[rows], dtype=torch.float64) for name, values in SNRS.items()}
    return {"input_values": student_view, "teacher_input_values": teacher_view, "attention_mask": mask, **snrs}


def _trainer_results(rank: int, folder: str) -> dict[str, dict]:
    """This process's trainer loss on its half of the batch, and its gradients, per correlation style."""
    from hf_corrdistill.training.arguments import DistillationConfig
    from hf_corrdistill.training.trainer import DistillationTrainer

    args = DistillationConfig(teacher_name_or_path="tiny", output_dir=folder, use_cpu=True, report_to="none",
                              correlation_sync="global", per_device_train_batch_size=2, per_device_eval_batch_size=2,
                              **SETTINGS)
    student, teacher = _networks()
    trainer = DistillationTrainer(model=student, teacher=teacher, args=args)
    results = {}
    for style in STYLES:
        trainer.args.correlation_style = style
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, _process_batch(rank))
        loss.backward()
        grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        results[style] = {"loss": loss.detach(), "grads": grads}
    return results


def _pad_frames(x: torch.Tensor, frames: int, dim: int) -> torch.Tensor:
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, frames - x.shape[dim]]
    return torch.nn.functional.pad(x, pad)


@pytest.mark.parametrize("style", STYLES)
def test_trainer_global_loss_equals_one_process_on_the_whole_batch(two_processes, style):
    """Each process's loss (its own half, frames padded to the other's) is `correlation_loss` on the whole batch;
    the processes' gradients average to its gradient."""
    student, teacher = _networks()
    halves = [_process_batch(rank) for rank in range(WORLD)]
    outputs = [student(input_values=h["input_values"], attention_mask=h["attention_mask"]) for h in halves]
    with torch.no_grad():
        targets = [teacher_targets(teacher, h["teacher_input_values"], h["attention_mask"], (1, 2, 3))
                   for h in halves]  # (2, N, F_r, D)
    frames = max(t.shape[2] for t in targets)
    assert len({t.shape[2] for t in targets}) == WORLD  # the processes' frame counts differ: padding is exercised
    predictions = torch.cat([_pad_frames(o.predictions, frames, 2) for o in outputs])  # (4, N, F, D)
    targets = torch.cat([_pad_frames(t, frames, 2) for t in targets])  # (4, N, F, D)
    frame_mask = torch.cat([_pad_frames(o.frame_mask, frames, 1) for o in outputs])  # (4, F)
    def loss_of(rows: slice) -> torch.Tensor:  # one process computing the loss, with the trainer's settings
        return correlation_loss(
            predictions[rows], targets[rows], frame_mask[rows], style=style,
            pool_positions=SETTINGS["pool_positions"], lambda_cross=SETTINGS["lambda_cross"],
            lambda_self=SETTINGS["lambda_self"], cross_scale=SETTINGS["cross_scale"],
            self_scale=SETTINGS["self_scale"], weighting=SETTINGS["weighting"], snr_low=SETTINGS["weighting_snr_low"],
            snr_high=SETTINGS["weighting_snr_high"],
            student_snr=torch.tensor(SNRS["student_snr"], dtype=torch.float64)[rows],
            teacher_snr=torch.tensor(SNRS["teacher_snr"], dtype=torch.float64)[rows],
        ).loss

    reference = loss_of(slice(None))
    reference.backward()
    processes = [results["trainer"][style] for results in two_processes]
    for rank, results in enumerate(processes):
        assert torch.allclose(results["loss"], reference.detach(), rtol=1e-10, atol=1e-12), (rank, style)
    grads = [results["grads"] for results in processes]
    expected = {name: p.grad for name, p in student.named_parameters() if p.grad is not None}
    assert set(grads[0]) == set(grads[1]) == set(expected)
    for name, grad in expected.items():
        mean = (grads[0][name] + grads[1][name]) / WORLD  # what data parallelism averages
        assert torch.allclose(mean, grad, rtol=1e-8, atol=1e-12), name
    for rank in range(WORLD):  # each process alone, same settings, its own half: another loss
        alone = loss_of(slice(2 * rank, 2 * rank + 2))
        assert not torch.allclose(alone, reference, rtol=1e-4, atol=0), rank
