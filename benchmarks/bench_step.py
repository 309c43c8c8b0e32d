"""One distillation step, timed part by part: teacher forward, student forward, loss, backward, optimizer.

    python benchmarks/bench_step.py --size tiny                      # seconds, any machine
    python benchmarks/bench_step.py --size paper --batch 4           # HuBERT-Base-shaped teacher, DistilHuBERT student
    python benchmarks/bench_step.py --size paper --device cuda --bf16 --teacher_dtype bfloat16 [--compile]

The step is the one `DistillationTrainer.compute_loss` takes (`teacher_targets`, the student's predictions, the
selected loss with its defaults, which are train.py's) followed by backward and AdamW; the weights are random, so
no Hub access is needed.
Inputs are `--batch` crops of `--seconds` of audio, a quarter of them padded to 80 %. Whole steps are timed with
no synchronisation inside them (one at the end of each step); the per-part shares come from separate steps with a
synchronisation after every part, so they add up to slightly more than a whole step. Prints one JSON object.
"""

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from transformers import HubertConfig, HubertModel  # noqa: E402

from hf_corrdistill import CorrDistillConfig, CorrDistillForPreTraining  # noqa: E402
from hf_corrdistill.losses import correlation_loss, distilhubert_loss  # noqa: E402
from hf_corrdistill.training.teacher import teacher_targets  # noqa: E402

PARTS = ("teacher_forward", "student_forward", "loss", "backward", "optimizer")
SAMPLE_RATE = 16_000


def build_models(size: str) -> tuple[HubertModel, CorrDistillForPreTraining]:
    """Random-weight teacher and student: `paper` = HuBERT Base (12 x 768) -> DistilHuBERT (2 x 768, layers 4/8/12)."""
    if size == "paper":
        teacher_config, student_config = HubertConfig(), CorrDistillConfig()
    else:
        shared = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        teacher_config = HubertConfig(num_hidden_layers=3, **shared)
        student_config = CorrDistillConfig(num_hidden_layers=2, pred_layer_ids=(1, 2, 3), teacher_hidden_size=64,
                                           **shared)
    teacher_config.update({"layerdrop": 0.0, "mask_time_prob": 0.0})
    torch.manual_seed(0)
    return HubertModel(teacher_config), CorrDistillForPreTraining(student_config)


def make_batch(batch: int, seconds: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    samples = int(seconds * SAMPLE_RATE)
    audio = 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(0))  # (B, T)
    mask = torch.ones(batch, samples, dtype=torch.long)  # (B, T)
    mask[: batch // 4, int(0.8 * samples) :] = 0
    return audio.where(mask.bool(), 0.0).to(device), mask.to(device)


LOSSES = {"correlation": correlation_loss, "distilhubert": distilhubert_loss}  # with their defaults, train.py's


class Step:
    """The training step, callable part by part; `sync` runs after every part when the shares are measured."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.device = device
        teacher, student = build_models(args.size)
        self.teacher = teacher.to(device, getattr(torch, args.teacher_dtype)).eval().requires_grad_(False)
        self.student = student.to(device).train()
        self.forward = torch.compile(self.student) if args.compile else self.student
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=2e-4, fused=device.type == "cuda")
        self.loss_fn = LOSSES[args.loss]
        self.layers = tuple(student.config.pred_layer_ids)
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16)
        self.audio, self.mask = make_batch(args.batch, args.seconds, device)
        self.teacher_mask = self.mask if args.teacher_mask else None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def targets(self) -> torch.Tensor:
        with torch.no_grad():
            return teacher_targets(self.teacher, self.audio, self.teacher_mask, self.layers)  # (B, N, F, D)

    def __call__(self, mark: Callable[[str], None] = lambda part: None) -> torch.Tensor:
        targets = self.targets()
        mark("teacher_forward")
        with torch.autocast(**self.autocast):
            outputs = self.forward(input_values=self.audio, attention_mask=self.mask)
            mark("student_forward")
            loss = self.loss_fn(outputs.predictions, targets, outputs.frame_mask).loss  # float32
        mark("loss")
        loss.backward()
        mark("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark("optimizer")
        return loss.detach()


def time_steps(step: Step, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        step.sync()
        start = time.perf_counter()
        step()
        step.sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_parts(step: Step, repeats: int) -> dict[str, float]:
    spent: dict[str, list[float]] = {part: [] for part in PARTS}
    for _ in range(repeats):
        step.sync()
        last = time.perf_counter()

        def mark(part: str) -> None:
            nonlocal last
            step.sync()
            now = time.perf_counter()
            spent[part].append(now - last)
            last = now

        step(mark)
    return {part: statistics.median(values) for part, values in spent.items()}


def host_syncs(step: Step) -> list[str]:
    """Where one whole step synchronises with the host (`.item()`, data-dependent shapes, ...): for each sync, the
    innermost frames of the Python stack, as file:line."""
    import traceback
    import warnings

    found = []

    def record(message, *args, **kwargs) -> None:
        if "synchroniz" in str(message):
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.endswith("warnings.py")]
            found.append(" < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-4:])))

    torch.cuda.set_sync_debug_mode("warn")  # before recording: switching the mode is not part of the step
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return found


def teacher_precision_check(args: argparse.Namespace, device: torch.device) -> float:
    """Relative difference of the loss with the teacher in `--teacher_dtype` against a float32 teacher."""
    teacher, student = build_models(args.size)
    teacher, student = teacher.to(device).eval(), student.to(device).eval()
    audio, mask = make_batch(args.batch, args.seconds, device)
    loss_fn = LOSSES[args.loss]
    layers = tuple(student.config.pred_layer_ids)
    with torch.no_grad():
        outputs = student(input_values=audio, attention_mask=mask)
        exact = loss_fn(outputs.predictions, teacher_targets(teacher, audio, mask, layers), outputs.frame_mask).loss
        teacher.to(getattr(torch, args.teacher_dtype))
        low = loss_fn(outputs.predictions, teacher_targets(teacher, audio, mask, layers), outputs.frame_mask).loss
    return float((low - exact).abs() / exact.abs())


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="utterances per step (default: 24 paper, 4 tiny)")
    parser.add_argument("--seconds", type=float, help="crop length (default: 15.6 paper, 2 tiny)")
    parser.add_argument("--loss", choices=("correlation", "distilhubert"), default="correlation")
    parser.add_argument("--bf16", action="store_true", help="student forward under bfloat16 autocast")
    parser.add_argument("--teacher_dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student")
    parser.add_argument("--cudnn_benchmark", action="store_true", help="let cuDNN time its convolution algorithms")
    parser.add_argument("--no_teacher_mask", dest="teacher_mask", action="store_false",
                        help="no padding mask for the teacher (train.py's teacher_attention_mask: false)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.batch = args.batch or (24 if args.size == "paper" else 4)
    args.seconds = args.seconds or (15.6 if args.size == "paper" else 2.0)
    if args.batch < 2:
        parser.error("--batch must be at least 2: correlations need two utterances")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device(args.device)
    step = Step(args, device)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    whole = time_steps(step, args.repeats)
    parts = time_parts(step, args.repeats)
    median = statistics.median(whole)
    total = sum(parts.values())
    result = {
        "command": "python benchmarks/bench_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "size": args.size, "batch": args.batch, "seconds": args.seconds, "loss": args.loss, "bf16": args.bf16,
        "teacher_dtype": args.teacher_dtype, "compile": args.compile, "cudnn_benchmark": args.cudnn_benchmark,
        "teacher_mask": args.teacher_mask,
        "step_seconds_median": median, "steps_per_second": 1 / median,
        "audio_seconds_per_second": args.batch * args.seconds / median,
        "step_seconds": whole,
        "part_seconds": parts,
        "part_share": {part: value / total for part, value in parts.items()},
        # CUDA: peak allocated by tensors in the timed steps; CPU: peak resident set of the whole process
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "teacher_parameters_m": sum(p.numel() for p in step.teacher.parameters()) / 1e6,
        "student_parameters_m": sum(p.numel() for p in step.student.parameters()) / 1e6,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "platform": platform.platform(),
    }
    if device.type == "cuda":
        result["host_syncs"] = host_syncs(step)
        result["host_syncs_per_step"] = len(result["host_syncs"])
    if args.teacher_dtype != "float32":
        result["teacher_loss_relative_difference"] = teacher_precision_check(args, device)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
