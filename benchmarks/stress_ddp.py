"""Two-process runs of train.py, many times under CPU load: do they all end cleanly?

    python benchmarks/stress_ddp.py [--runs 50] [--load 2] [--hang_after 600] [--output stress.json]

Each run is `accelerate launch --multi_gpu --num_processes 2 train.py configs/tiny.yaml` (DDP over gloo on the CPU,
4 steps, evaluation and a checkpoint), cycling through the cases below, while ``--load`` busy processes keep the
cores occupied. A run is counted as
  ok      exit code 0 and the student written
  abort   a process died of a signal (e.g. "terminate called without an active exception", SIGABRT)
  hang    still running after ``--hang_after`` seconds (then killed)
  failed  any other non-zero exit code
Then one run in which rank 1 raises at its second training step checks that a failed rank ends the launch
promptly with a non-zero exit code rather than leaving the other rank waiting at a collective.
"""

import argparse
import itertools
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("stress_ddp")

CASES = {  # name -> (correlation_sync, the student's layerdrop)
    "local": ("local", 0.0),
    "global": ("global", 0.0),
    "local, layerdrop 0.5": ("local", 0.5),
    "global, layerdrop 0.5": ("global", 0.5),
}
TINY = ROOT / "configs" / "tiny.yaml"


def case_config(case: str, folder: Path) -> Path:
    """configs/tiny.yaml with the case's correlation sync and student layerdrop, written into ``folder``."""
    sync, layerdrop = CASES[case]
    config = yaml.safe_load(TINY.read_text())
    config["correlation_sync"] = sync
    config["student_overrides"] = {**config["student_overrides"], "layerdrop": layerdrop}
    path = folder / f"{sync}-{layerdrop}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The entry point of the failing run: train.py whose rank 1 raises at its second training step.
FAILING_ENTRY = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from hf_corrdistill.training import trainer as trainer_module
    from hf_corrdistill.training.train_cli import main

    original = trainer_module.DistillationTrainer.training_step

    def training_step(self, *args, **kwargs):
        if os.environ.get("RANK") == "1" and self.state.global_step == 1:
            raise RuntimeError("rank 1 fails on purpose")
        return original(self, *args, **kwargs)

    trainer_module.DistillationTrainer.training_step = training_step
    main(sys.argv[1:])
""")


def launch_command(entry: str, config: Path, output_dir: Path, steps: int = 4) -> list[str]:
    """The two-process CPU launch of ``entry`` (train.py or a stand-in) on ``config``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", entry, str(config),
            "--output_dir", str(output_dir), "--max_steps", str(steps), "--logging_steps", "2",
            "--eval_steps", str(steps), "--save_steps", str(steps)]


def run_once(command: list[str], hang_after: float) -> dict:
    """Runs ``command`` in its own process group; returns its exit code, seconds, outcome and stderr."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=hang_after)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        hung = True
    seconds = time.monotonic() - start
    code = process.returncode
    if hung:
        outcome = "hang"
    elif code == 0 and "student written to" in stderr:
        outcome = "ok"
    elif code < 0 or "terminate called" in stderr or "Signal 6" in stderr or "SIGABRT" in stderr:
        outcome = "abort"
    else:
        outcome = "failed"
    return {"exit_code": code, "seconds": round(seconds, 1), "outcome": outcome, "stderr": stderr}


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="clean runs, cycling through the cases")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes beside each run")
    parser.add_argument("--hang_after", type=float, default=600, help="seconds after which a run counts as a hang")
    parser.add_argument("--output", type=Path, help="write the report (JSON) here as well")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = []
    load = busy_processes(args.load)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            configs = {case: case_config(case, Path(scratch)) for case in CASES}
            for index, case in zip(range(args.runs), itertools.cycle(CASES), strict=False):
                result = run_once(launch_command("train.py", configs[case], Path(scratch, f"run{index}")),
                                  args.hang_after)
                runs.append({"case": case, **result})
                logger.info("run %d (%s): %s, exit code %s, %.1f s", index, case, result["outcome"],
                            result["exit_code"], result["seconds"])
            entry = Path(scratch, "failing_train.py")
            entry.write_text(FAILING_ENTRY.format(root=str(ROOT)))
            failing = run_once(launch_command(str(entry), configs["global"], Path(scratch, "failing")),
                               args.hang_after)
    finally:
        for process in load:
            process.kill()
    summary = {}
    for case in CASES:
        mine = [run for run in runs if run["case"] == case]
        if mine:
            counts = {kind: sum(run["outcome"] == kind for run in mine) for kind in ("ok", "abort", "hang", "failed")}
            summary[case] = {"runs": len(mine), **counts,
                             "median_seconds": round(statistics.median(run["seconds"] for run in mine), 1)}
    failed_rank = {"exit_code": failing["exit_code"], "seconds": failing["seconds"],
                   "outcome": failing["outcome"], "raised": "rank 1 fails on purpose" in failing["stderr"]}
    for run in runs:  # the end of stderr, kept for runs that did not end well
        stderr = run.pop("stderr")
        if run["outcome"] != "ok":
            run["stderr_tail"] = stderr[-1500:]
    report = {"load": args.load, "summary": summary, "failed_rank": failed_rank, "runs": runs}
    for case, counts in summary.items():
        logger.info("%-22s %s", case, ", ".join(f"{key} {value}" for key, value in counts.items()))
    logger.info("one rank failing: exit code %s after %.1f s (%s)", failed_rank["exit_code"], failed_rank["seconds"],
                "its error reached the log" if failed_rank["raised"] else "its error is not in the log")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
