"""The paper's comparison at small scale: students of one teacher that differ only in their objective and views,
scored by eval_superb, and compared pairwise with 95 % bootstrap intervals.

    python -m hf_corrdistill.tools.superb_mini --output data/superb-mini --scale 10      # sets, noise, 2 h corpus
    python benchmarks/reproduce.py --data data/superb-mini              # the paper's six and g (~4 h on 2 cores)

Students (configs/demo.yaml's student and optimiser; equal steps, data and seeds; only the objective and views differ):
  a  L_KD (L1 + cosine), clean input            d  L_CL, `snr` weighting, Setup 2 views
  b  L_KD, Setup 2 views                         e  L_CL without the self-correlation term, Setup 2 views
  c  L_CL, fixed weights, Setup 2 views          f  L_CL, `frames` style, Setup 2 views
  g  (ours) c with the off-diagonal weights raised: lambda_cc 5e-3, lambda_sc 0.5 (published 5e-5, 5e-6)
  h  c plus RobustDistiller's enhancement term   i  b plus the enhancement term     (--students h i: not by default)
Distillation reads DATA/corpus and DATA/noise/train; evaluation adds DATA/noise/test (seen categories, other clips)
and DATA/noise/unseen (categories never heard in distillation). For every seed s the students of seed s are distilled
with seed s, then eval_superb scores the teacher, the students and the baselines with seed s (noisy copies and
heads), so the teacher's and baselines' spread comes from the heads alone, and two models of one seed are scored on
the same noisy copies of the same test items: their difference is taken item by item (`paired_differences`).
Finished students and evaluations are reused when the command is run again. Writes results.json (every value of
every seed, and the differences), results.md (mean +- std, and each model's difference against --reference with its
interval) and results.png under --output.
"""

import argparse
import dataclasses
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hf_corrdistill.superb.arguments import parse as parse_eval  # noqa: E402
from hf_corrdistill.superb.report import TITLES  # noqa: E402
from hf_corrdistill.superb.runner import run as evaluate  # noqa: E402
from hf_corrdistill.training.train_cli import main as distil  # noqa: E402

logger = logging.getLogger("reproduce")


@dataclasses.dataclass(frozen=True)
class Student:
    label: str
    flags: tuple[str, ...]
    enhanced: bool = False  # trained with --enhancement_weight (reproduce.py's --enhancement_weight)


STUDENTS = {
    "a": Student("L_KD, clean", ("--loss", "distilhubert", "--views", "clean")),
    "b": Student("L_KD, Setup 2", ("--loss", "distilhubert", "--views", "setup2")),
    "c": Student("L_CL fixed, Setup 2", ("--loss", "correlation", "--weighting", "fixed", "--views", "setup2")),
    "d": Student("L_CL snr, Setup 2", ("--loss", "correlation", "--weighting", "snr", "--views", "setup2")),
    "e": Student("L_CL no self-corr., Setup 2", ("--loss", "correlation", "--weighting", "fixed", "--lambda_self", "0",
                                                  "--views", "setup2")),
    "f": Student("L_CL frames, Setup 2", ("--loss", "correlation", "--weighting", "fixed", "--correlation_style",
                                          "frames", "--views", "setup2")),
    # ours, not the paper's: with the published lambdas the off-diagonal terms are ~0.1 % of the loss at this width,
    # so c, d and e train the same student; g weights them up to about a tenth of the loss to see if they matter
    "g": Student("L_CL fixed, off-diagonal x100 / x1e5 (ours), Setup 2",
                 ("--loss", "correlation", "--weighting", "fixed", "--lambda_cross", "5e-3", "--lambda_self", "0.5",
                  "--views", "setup2")),
    # RobustDistiller's enhancement term (Guimaraes et al., ICASSP 2023) beside each objective
    "h": Student("L_CL fixed + enhancement, Setup 2",
                 ("--loss", "correlation", "--weighting", "fixed", "--views", "setup2"), enhanced=True),
    "i": Student("L_KD + enhancement, Setup 2", ("--loss", "distilhubert", "--views", "setup2"), enhanced=True),
}
ENHANCEMENT_WEIGHT = 0.5  # chosen on the KS and IC dev sets among 0.1, 0.5 and 2 (docs/evidence.md)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a superb_mini output folder with corpus/ and noise/")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--work_dir", type=Path, help="students, evaluations and caches (default OUTPUT/work)")
    parser.add_argument("--teacher", default=str(ROOT / "demo_data" / "teacher"), help="teacher folder or Hub id")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml",
                        help="train.py config giving the student and the optimiser")
    parser.add_argument("--corpus", type=Path, help="distillation speech (default DATA/corpus)")
    parser.add_argument("--students", nargs="*", default=list("abcdefg"), choices=list(STUDENTS),
                        help="which students to distil (none: score the teacher and the baselines only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200, help="distillation steps of every student")
    parser.add_argument("--enhancement_weight", type=float, default=ENHANCEMENT_WEIGHT,
                        help="enhancement_weight of the students with the enhancement term (h, i)")
    parser.add_argument("--reference", default="b",
                        help="the model every other one is compared with, paired by seed and test item")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the paired differences")
    parser.add_argument("--baselines", nargs="*", default=["fbank"],
                        help="more upstreams scored beside them: fbank, mfcc or NAME=FOLDER")
    parser.add_argument("--tasks", nargs="+", default=["ks", "ic", "asr"])
    parser.add_argument("--snrs", nargs="+", default=["clean", "10", "0"], help="eval_superb conditions")
    parser.add_argument("--head_steps", nargs="*", default=[], help="eval_superb --steps (default: its --quick)")
    parser.add_argument("--head_lr", nargs="+", default=["1e-3", "asr=3e-3"],
                        help="eval_superb --learning_rate (X or TASK=X): SUPERB's 1e-4 suits 200k steps, not "
                             "--quick's few hundred")
    parser.add_argument("--distil_only", action="store_true",
                        help="distil the missing students and stop (e.g. several commands side by side, one thread "
                             "each, with OMP_NUM_THREADS=1); the command without it then scores them")
    parser.add_argument("--train_flags", nargs=argparse.REMAINDER, default=[],
                        help="further train.py flags for every student (last on the line)")
    args = parser.parse_args(argv)
    args.corpus = args.corpus or args.data / "corpus"
    args.work_dir = args.work_dir or args.output / "work"
    for path in (args.corpus / "train", args.data / "noise" / "train", args.data / "noise" / "test",
                 args.data / "noise" / "unseen", args.config):
        if not path.exists():
            parser.error(f"{path} does not exist (make the sets with python -m hf_corrdistill.tools.superb_mini)")
    if len(args.seeds) < 2:
        logger.warning("one seed: no standard deviation")
    if args.enhancement_weight <= 0:
        parser.error("--enhancement_weight must be > 0: students h and i are defined by the term")
    return args


def student_folder(args: argparse.Namespace, name: str, seed: int) -> Path:
    """WORK_DIR/students/NAME[-enhW]-seedS: a student of another enhancement weight is another folder."""
    weight = f"-enh{args.enhancement_weight:g}" if STUDENTS[name].enhanced else ""
    return args.work_dir / "students" / f"{name}{weight}-seed{seed}"


def train_student(args: argparse.Namespace, name: str, seed: int) -> tuple[Path, float]:
    """Distil one student (or reuse a finished one); returns its folder and the seconds it took."""
    folder = student_folder(args, name, seed)
    record = folder / "distillation_results.json"
    if record.exists():
        logger.info("student %s seed %d: reusing %s", name, seed, folder)
        return folder, json.loads(record.read_text()).get("train_runtime", 0.0)
    logger.info("student %s (%s) seed %d: %d steps", name, STUDENTS[name].label, seed, args.steps)
    distil([str(args.config), "--teacher_name_or_path", args.teacher, "--train_data", str(args.corpus),
            "--noise_sources", str(args.data / "noise" / "train"), "--output_dir", str(folder),
            "--seed", str(seed), "--max_steps", str(args.steps), "--eval_strategy", "no", "--save_strategy", "no",
            "--logging_steps", "50",
            *STUDENTS[name].flags,
            *(("--enhancement_weight", str(args.enhancement_weight)) if STUDENTS[name].enhanced else ()),
            *args.train_flags])
    return folder, json.loads(record.read_text())["train_runtime"]


def evaluate_seed(args: argparse.Namespace, seed: int, students: dict[str, Path]) -> dict:
    upstreams = [f"teacher={args.teacher}", *(f"{n}={p}" for n, p in students.items()), *args.baselines]
    argv = ["--data", str(args.data), "--snrs", *args.snrs, "--tasks", *args.tasks, "--quick", "--seed", str(seed),
            "--learning_rate", *args.head_lr,
            "--output_dir", str(args.work_dir / f"eval-seed{seed}"), "--cache_dir", str(args.work_dir / "cache")]
    if set(args.snrs) != {"clean"}:
        argv += ["--noise", str(args.data / "noise" / "test"), "--unseen_noise", str(args.data / "noise" / "unseen")]
    if args.head_steps:
        argv += ["--steps", *args.head_steps]
    for upstream in upstreams:
        argv += ["--upstream", upstream]
    return evaluate(parse_eval(argv))


def add_seconds(args: argparse.Namespace, name: str, seconds: float) -> dict[str, float]:
    """Evaluation time spent so far per seed, kept across interrupted runs in WORK_DIR/eval_seconds.json."""
    path = args.work_dir / "eval_seconds.json"
    spent = json.loads(path.read_text()) if path.exists() else {}
    spent[name] = spent.get(name, 0.0) + seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spent, indent=2) + "\n")
    return spent


def aggregate(runs: dict[int, dict]) -> dict:
    """{task: {model: {condition: {mean, std, values}}}} over seeds; dev scores as condition 'dev'."""
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for _, report in sorted(runs.items()):
        for task, per_upstream in report["results"].items():
            for upstream, result in per_upstream.items():
                model = upstream.split("=")[0]
                cells = table.setdefault(task, {}).setdefault(model, {})
                for condition, value in {"dev": result["dev"], **result["test"]}.items():
                    cells.setdefault(condition, {"values": []})["values"].append(value)
    for per_model in table.values():
        for cells in per_model.values():
            for cell in cells.values():
                values = cell["values"]
                cell["mean"] = statistics.fmean(values)
                cell["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return table


def _outcomes(per_seed: list[dict], upstream: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """(S, N) numerators (right answers, or word errors) and (N,) denominators (1, or reference words) per item."""
    items = np.array([result[upstream]["test_items"][condition] for result in per_seed], dtype=np.float64)
    if items.ndim == 3:  # WER: [errors, words] per item
        return items[..., 0], items[0, :, 1]
    return items, np.ones(items.shape[1])


def paired_differences(runs: dict[int, dict], reference: str, resamples: int, seed: int = 0) -> dict:
    """{task: {model: {condition: {difference, low, high, resolved}}}}: every model's test metric minus the
    reference's, in points, with a 95 % percentile bootstrap interval.

    Both models of a seed are scored on the same test items with the same noisy copies (the evaluation's seed), so
    the difference is taken item by item. A resample draws the seeds, then the test items, with replacement; its
    difference is the mean over the drawn seeds of each seed's metric difference on the drawn items (for WER:
    errors over words of the drawn items). One set of draws per task serves every model and condition.
    """
    seeds = sorted(runs)
    rng = np.random.default_rng(seed)
    table: dict[str, dict] = {}
    for task in runs[seeds[0]]["results"]:
        keys = runs[seeds[0]]["test_keys"][task]
        if any(runs[s]["test_keys"][task] != keys for s in seeds):
            raise ValueError(f"{task}: the seeds were scored on different test items")
        per_seed = [runs[s]["results"][task] for s in seeds]
        upstreams = {upstream.split("=")[0]: upstream for upstream in per_seed[0]}
        if reference not in upstreams:
            raise ValueError(f"--reference {reference} was not scored on {task}")
        item_draws = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=resamples)  # (R, N)
        seed_draws = rng.multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=resamples)  # (R, S)

        table[task] = {}
        for model, upstream in upstreams.items():
            if model == reference:
                continue
            cells = table[task].setdefault(model, {})
            for condition in per_seed[0][upstream]["test_items"]:
                ours, words = _outcomes(per_seed, upstream, condition)
                theirs, _ = _outcomes(per_seed, upstreams[reference], condition)
                difference = ours - theirs  # (S, N)
                per_draw = (item_draws @ difference.T) / (item_draws @ words)[:, None]  # (R, S)
                statistic = (seed_draws * per_draw).sum(1) / len(seeds)  # (R,)
                low, high = np.percentile(statistic, [2.5, 97.5])
                cells[condition] = {"difference": float(difference.sum(1).mean() / words.sum()),
                                    "low": float(low), "high": float(high), "resolved": bool(low > 0 or high < 0)}
    return table


def without_items(report: dict) -> dict:
    """An evaluation report without its per-item outcomes (they stay in the evaluation's own results.json)."""
    results = {task: {upstream: {k: v for k, v in result.items() if k != "test_items"}
                      for upstream, result in per_upstream.items()}
               for task, per_upstream in report["results"].items()}
    return {**{k: v for k, v in report.items() if k != "test_keys"}, "results": results}


def model_label(model: str) -> str:
    return f"{model}: {STUDENTS[model].label}" if model in STUDENTS else model


def markdown(summary: dict) -> str:
    lines = ["# benchmarks/reproduce.py", "",
             f"`{summary['command']}`", "",
             f"Seeds {summary['seeds']}; "
             + (f"{summary['steps']} distillation steps per student; " if summary["students"] else "")
             + "mean +- standard deviation over seeds, in %. Test split under every condition (`seen`: noise/test "
             "clips of the "
             f"categories heard in distillation, `unseen`: categories never heard); dev is clean. "
             f"{summary['compute_seconds'] / 60:.0f} min of distillation and evaluation on "
             f"{summary['machine']['device']}.", ""]
    for task, per_model in summary["results"].items():
        conditions = list(next(iter(per_model.values())))
        lines += [f"## {TITLES[task]}", "", "| model | " + " | ".join(conditions) + " |",
                  "|---" * (len(conditions) + 1) + "|"]
        for model, cells in per_model.items():
            row = [f"{100 * cells[c]['mean']:.1f} +- {100 * cells[c]['std']:.1f}" for c in conditions]
            lines.append(f"| {model_label(model)} | " + " | ".join(row) + " |")
        lines.append("")
    reference = summary["reference"]
    for task, per_model in summary["differences"].items():
        conditions = list(next(iter(per_model.values())))
        lines += [f"## {TITLES[task]}: difference against {model_label(reference)}", "",
                  f"Test metric minus {reference}'s, in points, paired by seed and test item, with its 95 % "
                  f"bootstrap interval ({summary['resamples']} resamples of seeds and items); **bold**: the interval "
                  "excludes 0.",
                  "", "| model | " + " | ".join(conditions) + " |", "|---" * (len(conditions) + 1) + "|"]
        for model, cells in per_model.items():
            row = []
            for condition in conditions:
                cell = cells[condition]
                text = f"{100 * cell['difference']:+.1f} [{100 * cell['low']:+.1f}, {100 * cell['high']:+.1f}]"
                row.append(f"**{text}**" if cell["resolved"] else text)
            lines.append(f"| {model_label(model)} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["results"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        per_model = summary["results"][task]
        conditions = [c for c in next(iter(per_model.values())) if c != "dev"]
        for index, (model, cells) in enumerate(per_model.items()):
            axis.errorbar(range(len(conditions)), [100 * cells[c]["mean"] for c in conditions],
                          yerr=[100 * cells[c]["std"] for c in conditions], marker="o", capsize=3,
                          color=f"C{index}", label=model_label(model))
        axis.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
        axis.set_title(TITLES[task])
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    started = time.monotonic()
    runs, train_seconds, eval_seconds = {}, {}, {}
    for seed in args.seeds:
        students = {}
        for name in args.students:
            students[name], train_seconds[f"{name}-seed{seed}"] = train_student(args, name, seed)
        if args.distil_only:
            continue
        tick = time.monotonic()
        runs[seed] = evaluate_seed(args, seed, students)
        eval_seconds = add_seconds(args, f"eval-seed{seed}", time.monotonic() - tick)
    if args.distil_only:
        logger.info("distilled %d students (%.1f min); the same command without --distil_only scores them",
                    len(train_seconds), (time.monotonic() - started) / 60)
        return {"distillation_seconds": train_seconds}
    scored = {upstream.split("=")[0] for run in runs.values() for per in run["results"].values() for upstream in per}
    differences = paired_differences(runs, args.reference, args.resamples) if args.reference in scored else {}
    summary = {
        "command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seeds": args.seeds,
        "steps": args.steps,
        "students": {name: dataclasses.asdict(STUDENTS[name]) for name in args.students},
        "teacher": args.teacher,
        "data": str(args.data),
        "results": aggregate(runs),
        "reference": args.reference,
        "resamples": args.resamples,
        "enhancement_weight": args.enhancement_weight,
        "differences": differences,
        "runs": {seed: without_items(report) for seed, report in runs.items()},  # items: WORK_DIR/eval-seedS
        "seconds": time.monotonic() - started,  # this invocation; finished parts of earlier ones were reused
        "distillation_seconds": train_seconds,  # each student's training time, whenever it ran
        "evaluation_seconds": eval_seconds,  # per seed, summed over invocations
        "compute_seconds": sum(train_seconds.values()) + sum(eval_seconds.values()),
        "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                    else f"CPU ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})",
                    "platform": platform.platform(),
                    "torch": torch.__version__},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    # paths inside the checkout are written relative to it: the record names no machine
    (args.output / "results.json").write_text(text.replace(json.dumps(f"{ROOT}/")[1:-1], ""))
    (args.output / "results.md").write_text(markdown(summary).replace(f"{ROOT}/", ""))
    plot(summary, args.output / "results.png")
    logger.info("wrote results.json, results.md and results.png under %s (%.1f min)", args.output,
                summary["seconds"] / 60)
    return summary


if __name__ == "__main__":
    main()
