"""Our DistilHuBERT student beside s3prl's `DistillerModel`, same architecture, batch and input, in one process.

    pip install --no-deps s3prl==0.4.18      # its distiller model needs only torch and numpy
    python benchmarks/bench_s3prl.py [--batch 8] [--seconds 4] [--repeats 7] [--threads N]

Both students are DistilHuBERT (Chang et al., ICASSP 2022): the HuBERT-Base CNN with GroupNorm, a 512 -> 768
projection, a 128-wide convolutional positional embedding in 16 groups, 2 post-LayerNorm transformer layers
(768 / 3072 / 12 heads, dropout 0.1) and the expand-last prediction head for teacher layers 4, 8 and 12.
s3prl's is built from the settings of its `pretrain/distiller/config_model.yaml` with 3 heads, as in the paper.
Timed for each, interleaved, the median of --repeats: student forward + loss + backward (the teacher is not
part of it: its targets are fixed random tensors). Losses:

  s3prl    s3prl's distiller objective as its `pretrain/distiller/pretrain_expert.py` computes it: L1 and
           -logsigmoid(cosine) averaged over every frame, padding included, plus its feature penalty (weight 0)
  ours-kd  `distilhubert_loss`: the same objective over valid frames only
  ours-cl  `correlation_loss`: train.py's default objective

Prints one JSON object with the times and the ratios ours / s3prl (below 1: ours is faster).
"""

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from hf_corrdistill import CorrDistillConfig, CorrDistillForPreTraining  # noqa: E402
from hf_corrdistill.losses import correlation_loss, distilhubert_loss  # noqa: E402

LAYERS = (4, 8, 12)
S3PRL_DISTILHUBERT = {  # s3prl pretrain/distiller/config_model.yaml, with the paper's three predicted layers
    "extractor_mode": "default", "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "extractor_dropout": 0.0, "feature_grad_mult": 0.1, "conv_pos": 128, "conv_pos_groups": 16,
    "encoder_layers": 2, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
    "activation_fn": "gelu", "layer_norm_first": False, "attention_type": "original", "dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.1, "encoder_layerdrop": 0.0, "final_dim": 768,
    "out_layer_type": "expand-last", "n_tasks": len(LAYERS), "task_emb_type": "expand-last", "loss_type": "l1",
    "feat_pen_loss": 0.0, "cosine_loss": 1.0, "pred_layer_id": list(LAYERS),
}


def s3prl_loss(feat: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """s3prl's distiller objective (pretrain_expert.py, `compute_loss`), every frame counted."""
    rec = F.l1_loss(pred, target)  # mean over (B, N, F, D)
    sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()  # mean over (B, N, F)
    feat_pen = feat.float().pow(2).mean()
    return rec + S3PRL_DISTILHUBERT["feat_pen_loss"] * feat_pen + S3PRL_DISTILHUBERT["cosine_loss"] * sim


def make_inputs(batch: int, seconds: float, frames: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    samples = int(seconds * 16_000)
    mask = torch.ones(batch, samples, dtype=torch.long)  # (B, T), a quarter of the batch padded to 80 %
    mask[: batch // 4, int(0.8 * samples) :] = 0
    audio = (0.1 * torch.randn(batch, samples, generator=g)).where(mask.bool(), 0.0)  # (B, T)
    targets = torch.randn(batch, len(LAYERS), frames, 768, generator=g)  # (B, N, F, D)
    return {"audio": audio, "mask": mask, "targets": targets}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    try:
        from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel
    except ImportError:
        raise SystemExit("s3prl is not installed: pip install --no-deps s3prl==0.4.18") from None
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = CorrDistillForPreTraining(CorrDistillConfig(pred_layer_ids=LAYERS)).train()
    with contextlib.redirect_stdout(sys.stderr):  # s3prl prints its settings
        theirs = DistillerModel(DistillerConfig(S3PRL_DISTILHUBERT)).train()
    frames = int(ours.corrdistill._get_feat_extract_output_lengths(torch.tensor(int(args.seconds * 16_000))))
    inputs = make_inputs(args.batch, args.seconds, frames)

    def ours_step(loss_fn) -> None:
        outputs = ours(input_values=inputs["audio"], attention_mask=inputs["mask"])
        loss_fn(outputs.predictions, inputs["targets"], outputs.frame_mask).loss.backward()
        ours.zero_grad(set_to_none=True)

    def s3prl_step() -> None:
        feat, _, pred, _ = theirs(inputs["audio"], inputs["mask"])  # pred: (B, N, F, D)
        s3prl_loss(feat, pred, inputs["targets"]).backward()
        theirs.zero_grad(set_to_none=True)

    steps = {"s3prl": s3prl_step, "ours-kd": lambda: ours_step(distilhubert_loss),
             "ours-cl": lambda: ours_step(correlation_loss)}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "command": "python benchmarks/bench_s3prl.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "batch": args.batch, "seconds": args.seconds, "frames": frames, "repeats": args.repeats,
        "parameters_m": {"ours": sum(p.numel() for p in ours.parameters()) / 1e6,
                         "s3prl": sum(p.numel() for p in theirs.parameters()) / 1e6},
        "median_seconds": median,
        "ratio_ours_kd_to_s3prl": median["ours-kd"] / median["s3prl"],
        "ratio_ours_cl_to_s3prl": median["ours-cl"] / median["s3prl"],
        "all_seconds": seconds,
        "device": f"CPU ({torch.get_num_threads()} threads)", "torch": torch.__version__,
        "platform": platform.platform(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
