"""How long train.py takes to reject a bad configuration, beside the imports it cannot avoid.

    python benchmarks/bench_startup.py [--repeats 5]

Each command runs in a fresh interpreter, interleaved, and the median wall time of each is printed:
  failing train.py    `python train.py configs/demo.yaml --pred_layers 2 9`: layer 9 is beyond the teacher's depth,
                      found after the config is parsed and the teacher's config read (the later checks)
  import package      `python -c "import hf_corrdistill"` (registers every Auto class: the model code loads)
  TrainingArguments   `import torch, transformers` and building a `TrainingArguments`, whose __post_init__ imports
                      transformers' integrations and modeling code: what train.py's checks run before
  floor               `import torch, datasets` and the argument classes train.py parses with, not built
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "failing train.py": [sys.executable, "train.py", "configs/demo.yaml", "--pred_layers", "2", "9"],
    "import package": [sys.executable, "-c", "import hf_corrdistill"],
    "TrainingArguments": [sys.executable, "-c",
                          "import torch, transformers; transformers.TrainingArguments(output_dir='x')"],
    "floor": [sys.executable, "-c",
              "import torch, datasets; from transformers import HfArgumentParser, TrainingArguments"],
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds[name].append(time.perf_counter() - start)
            failed = result.returncode != 0
            if failed != (name == "failing train.py"):
                raise SystemExit(f"{name}: unexpected exit status {result.returncode}\n{result.stderr[-2000:]}")
            if failed and "exceed the depth" not in result.stderr:
                raise SystemExit(f"{name}: not the expected error\n{result.stderr[-2000:]}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    report = {"median_seconds": medians, "seconds": seconds, "repeats": args.repeats}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
