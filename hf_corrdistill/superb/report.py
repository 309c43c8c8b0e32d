"""results.json, results.md and one PNG per task (metric against SNR, one line per upstream)."""

import json
from pathlib import Path

from .conditions import Condition
from .registry import TASKS

TITLES = {name: spec.title for name, spec in TASKS.items()}  # task -> table heading and plot axis


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def markdown(results: dict) -> str:
    lines = ["# SUPERB results", ""]
    for task, per_upstream in results["results"].items():
        conditions = results["conditions"]
        lines += [f"## {TITLES[task]}", "", "| upstream | dev | " + " | ".join(conditions) + " |",
                  "|---" * (len(conditions) + 2) + "|"]
        for upstream, result in per_upstream.items():
            cells = [_percent(result["test"].get(c)) for c in conditions]
            lines.append(f"| {upstream} | {_percent(result['dev'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Test split scored under every condition; dev (clean) chose each head's best step. "
              f"Upstream features cached in `{results['config']['cache_dir']}`.", ""]
    return "\n".join(lines)


def plot(results: dict, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = [Condition(**c) for c in results["condition_specs"]]
    snrs = sorted({c.snr for c in conditions if c.snr is not None}, reverse=True)
    has_clean = any(c.noise is None for c in conditions)
    positions = {snr: i + has_clean for i, snr in enumerate(snrs)}
    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (upstream, result) in enumerate(results["results"][task].items()):
        colour = f"C{index}"
        clean = result["test"].get("clean")
        for kind, style in (("seen", "-"), ("unseen", "--")):
            points = [(positions[c.snr], result["test"][c.name]) for c in conditions if c.noise == kind]
            if not points:
                continue
            if clean is not None:
                points = [(0, clean), *points]
            xs, ys = zip(*sorted(points), strict=True)
            axis.plot(xs, [100 * y for y in ys], style, marker="o", color=colour,
                      label=upstream if kind == "seen" else f"{upstream} (unseen noise)")
        if clean is not None and not any(c.noise for c in conditions):
            axis.plot([0], [100 * clean], "o", color=colour, label=upstream)
    axis.set_xticks(range(has_clean + len(snrs)), (["clean"] if has_clean else []) + [f"{s:g} dB" for s in snrs])
    axis.set_xlabel("test condition (SNR)")
    axis.set_ylabel(TITLES[task])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(results: dict, output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = [output / "results.json", output / "results.md"]
    written[0].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    written[1].write_text(markdown(results))
    for task in results["results"]:
        written.append(output / f"{task}.png")
        plot(results, task, written[-1])
    return written
