"""Pre-trains a small HuBERT teacher from scratch: the first iteration of HuBERT (Hsu et al. 2021, arXiv 2106.07447).

    python -m hf_corrdistill.tools.superb_mini --output data/superb-mini --scale 10  # its corpus/: 2 h
    python -m hf_corrdistill.tools.pretrain_teacher --data data/superb-mini/corpus --output demo_data/teacher \
        --steps 3000 --lr 5e-4 --warmup 0.1      # the committed teacher (lr 1e-3 collapsed to the unigram loss)

Targets are k-means cluster ids of MFCC frames (13 cepstra + deltas + delta-deltas, 25 ms windows every 10 ms, pairs
averaged to the model's 20 ms frames). Spans of the CNN features are replaced by the model's ``masked_spec_embed``;
the last hidden state is projected, compared by cosine similarity (temperature 0.1) with learned cluster embeddings,
and cross-entropy is taken on masked frames only. Only the `HubertModel` is saved, so `AutoModel` loads it; the
k-means centroids go to ``kmeans.npz`` and the run's record to ``pretraining.json``.
"""

import argparse
import dataclasses
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import HubertConfig, HubertModel
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from ..data.sources import SAMPLE_RATE, AudioDecodeError, decode_audio, default_feature_extractor, load_audio_source
from ..utils.filterbank import Filterbank

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PretrainSettings:
    """Every knob of a run; each field is also a command-line flag."""

    data: str | None = None  # folder of audio (its train/ split, or all of it); required
    output: str = "teacher"  # where the HubertModel, kmeans.npz and pretraining.json go
    steps: int = 10_000
    batch_size: int = 8
    clusters: int = 100
    kmeans_frames: int = 200_000  # frames subsampled for k-means
    kmeans_iters: int = 30  # Lloyd iterations after k-means++
    seed: int = 0
    lr: float = 5e-4
    warmup: float = 0.08  # fraction of the steps with a linear warmup; then linear decay to 0 (as HuBERT)
    weight_decay: float = 0.01
    max_grad_norm: float = 10.0
    min_crop: float = 2.0  # seconds; a batch is cropped to one random length, at most its shortest utterance
    max_crop: float = 4.0
    mask_prob: float = 0.8  # HuBERT: 8% of frames start a span of 10
    mask_length: int = 10
    final_dim: int = 64
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    conv_dim: int = 128
    dropout: float = 0.1
    max_minutes: float = 0.0  # wall-clock budget for MFCC, k-means and training; stops cleanly and saves (0: none)
    log_every: int = 50
    device: str = "cpu"
    threads: int = 0  # torch CPU threads (0: torch's default); 1 is often faster on a busy machine


def teacher_config(hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4, conv_dim: int = 128,
                   dropout: float = 0.1) -> HubertConfig:
    """HuBERT Base's CNN kernels/strides (20 ms frames), group norm and positional conv, narrowed and shallower."""
    return HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        conv_dim=(conv_dim,) * 7,
        hidden_dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=0.0,
        feat_proj_dropout=dropout,
        layerdrop=0.0,
        mask_time_prob=0.05,  # HF's default for fine-tuning; pre-training passes its own mask_time_indices
    )


class HubertPretrainer(nn.Module):
    """A `HubertModel` plus HuBERT's pre-training head: projection and cluster embeddings, cosine logits."""

    def __init__(self, config: HubertConfig, num_clusters: int, final_dim: int = 64, logit_temp: float = 0.1):
        super().__init__()
        self.hubert = HubertModel(config)
        self.final_proj = nn.Linear(config.hidden_size, final_dim)
        self.label_embeddings = nn.Parameter(torch.rand(num_clusters, final_dim))
        self.logit_temp = logit_temp

    def num_frames(self, samples: int) -> int:
        return int(self.hubert._get_feat_extract_output_lengths(samples))

    def forward(self, input_values: torch.Tensor, mask_time_indices: torch.Tensor) -> torch.Tensor:
        """(B, T) samples, (B, F) bool mask -> (B, F, K) logits."""
        hidden = self.hubert(input_values, mask_time_indices=mask_time_indices).last_hidden_state  # (B, F, H)
        projected = F.normalize(self.final_proj(hidden), dim=-1)  # (B, F, E)
        return projected @ F.normalize(self.label_embeddings, dim=-1).T / self.logit_temp  # (B, F, K)


def masked_prediction_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy over masked frames only (HuBERT's alpha = 1): (B, F, K), (B, F), (B, F)."""
    masked_logits, masked_targets = logits[mask], targets[mask]  # (M, K), (M,)
    loss = F.cross_entropy(masked_logits, masked_targets)
    accuracy = (masked_logits.argmax(-1) == masked_targets).float().mean()
    return loss, accuracy


def span_mask(batch: int, frames: int, mask_prob: float, mask_length: int, seed: int) -> torch.Tensor:
    """HuBERT's span mask from transformers' `_compute_mask_indices`, seeded without disturbing numpy's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        mask = _compute_mask_indices((batch, frames), mask_prob, mask_length, min_masks=2)  # (B, F)
    finally:
        np.random.set_state(state)
    return torch.from_numpy(mask)


def mfcc_frames(waves: list[np.ndarray], num_frames: Callable[[int], int]) -> list[torch.Tensor]:
    """(F, 39) MFCCs per waveform at the model's frame rate: frame i averages 10 ms frames 2i+1 and 2i+2, centred
    2.5 ms after the model's frame i (samples 320i .. 320i+400)."""
    mfcc = Filterbank("mfcc")
    features = []
    for wave, (frames_100hz,) in zip(waves, mfcc(waves), strict=True):  # (F100, 39), F100 = 1 + T // 160
        frames = num_frames(wave.size)
        features.append(frames_100hz[1 : 2 * frames + 1].reshape(frames, 2, -1).mean(1))  # (F, 39)
    return features


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    """(N, D), (K, D) -> (N,) index of the nearest centroid."""
    return torch.cat([torch.cdist(part, centroids).argmin(1) for part in x.split(chunk)])


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Deterministic full-batch k-means: k-means++ init from a seeded generator, then ``iters`` Lloyd steps.
    (N, D) -> (K, D); an emptied cluster keeps its centroid."""
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    dist2 = (x - x[chosen[0]]).pow(2).sum(1)  # (N,) squared distance to the nearest chosen centroid
    for _ in range(1, k):
        weights = dist2 if dist2.sum() > 0 else torch.ones_like(dist2)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        dist2 = torch.minimum(dist2, (x - x[chosen[-1]]).pow(2).sum(1))
    centroids = x[chosen].clone()  # (K, D)
    for _ in range(iters):
        labels = _nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (K, D)
        counts = torch.bincount(labels, minlength=k)[:, None]  # (K, 1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


def cluster_targets(features: list[torch.Tensor], clusters: int, max_frames: int, iters: int, seed: int
                    ) -> tuple[list[torch.Tensor], dict[str, np.ndarray], dict[str, float]]:
    """K-means on a subsample of standardised frames -> per-utterance (F,) cluster ids, the k-means state (mean,
    std, centroids) and cluster usage over all frames."""
    frames = torch.cat(features)  # (N, 39)
    mean, std = frames.mean(0), frames.std(0).clamp(min=1e-5)
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(frames), generator=generator)[:max_frames]
    centroids = kmeans((frames[subset] - mean) / std, clusters, iters, seed)
    labels = [_nearest((f - mean) / std, centroids) for f in features]
    share = torch.bincount(torch.cat(labels), minlength=clusters).double() / len(frames)  # (K,)
    entropy = -(share[share > 0] * share[share > 0].log()).sum()
    usage = {"used": int((share > 0).sum()), "largest_share": float(share.max()), "perplexity": float(entropy.exp()),
             "unigram_loss": float(entropy), "kmeans_frames": len(subset), "frames": len(frames)}  # unigram_loss:
    # the cross-entropy of always predicting the cluster frequencies; a loss below it uses the context
    state = {"mean": mean.numpy(), "std": std.numpy(), "centroids": centroids.numpy()}
    return labels, state, usage


def load_waves(folder: str, min_seconds: float = 1.0) -> list[np.ndarray]:
    """The train split of an audio folder, decoded to 16 kHz; unusable or shorter than ``min_seconds`` skipped."""
    waves, skipped = [], 0
    for row in load_audio_source(folder, "train"):
        try:
            wave = decode_audio(row["audio"])
        except AudioDecodeError as error:
            logger.warning("skipped: %s", error)
            skipped += 1
            continue
        if wave.size >= min_seconds * SAMPLE_RATE:
            waves.append(wave)
        else:
            skipped += 1
    logger.info("%d utterances (%.2f h) from %s, %d skipped", len(waves),
                sum(w.size for w in waves) / SAMPLE_RATE / 3600, folder, skipped)
    return waves


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of utterances of similar length (a jittered sort each epoch), in random order."""
    if len(lengths) < batch_size:
        raise ValueError(f"{len(lengths)} usable utterances, fewer than the batch size {batch_size}")
    for epoch in range(1 << 62):
        rng = np.random.default_rng((seed, epoch))
        order = np.argsort(np.asarray(lengths) * rng.uniform(0.9, 1.1, len(lengths)), kind="stable")
        groups = [order[i : i + batch_size].tolist() for i in range(0, len(order) - batch_size + 1, batch_size)]
        yield from (groups[g] for g in rng.permutation(len(groups)))


def crop_batch(waves: list[np.ndarray], labels: list[torch.Tensor], indices: list[int], seconds: float,
               stride: int, num_frames: Callable[[int], int], rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of one length (``seconds``, at most the shortest utterance), starting on frame boundaries so that the
    utterance's targets slice exactly: -> (B, T) samples, (B, F) targets."""
    length = min(int(seconds * SAMPLE_RATE), *(waves[i].size for i in indices))
    frames = num_frames(length)
    inputs, targets = [], []
    for i in indices:
        first = int(rng.integers(0, (waves[i].size - length) // stride + 1))  # first frame of the crop
        inputs.append(torch.from_numpy(waves[i][first * stride : first * stride + length]))
        targets.append(labels[i][first : first + frames])
    return torch.stack(inputs), torch.stack(targets)  # (B, T), (B, F)


def make_optimizer(model: nn.Module, settings: PretrainSettings
                   ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with HuBERT's betas and eps, no decay on biases, norms and cluster embeddings; linear warmup, then
    linear decay to 0 at ``settings.steps``."""
    decayed = {n for n, p in model.named_parameters() if p.ndim > 1 and n != "label_embeddings"}
    groups = [{"params": [p for n, p in model.named_parameters() if (n in decayed) == decay],
               "weight_decay": settings.weight_decay if decay else 0.0} for decay in (True, False)]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup, steps = max(1, int(settings.warmup * settings.steps)), settings.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    return optimizer, scheduler


def pretrain(settings: PretrainSettings, waves: list[np.ndarray]) -> tuple[HubertPretrainer, dict]:
    """Cluster MFCC targets and train; returns the trained module and the run's record."""
    start = time.monotonic()
    deadline = start + settings.max_minutes * 60 if settings.max_minutes > 0 else math.inf
    torch.manual_seed(settings.seed)
    config = teacher_config(settings.hidden_size, settings.num_layers, settings.num_heads, settings.conv_dim,
                            settings.dropout)
    model = HubertPretrainer(config, settings.clusters, settings.final_dim)
    labels, kmeans_state, usage = cluster_targets(mfcc_frames(waves, model.num_frames), settings.clusters,
                                                  settings.kmeans_frames, settings.kmeans_iters, settings.seed)
    logger.info("k-means: %d of %d clusters used, perplexity %.1f (unigram loss %.3f), largest share %.3f (%.0f s)",
                usage["used"], settings.clusters, usage["perplexity"], usage["unigram_loss"], usage["largest_share"],
                time.monotonic() - start)

    device = torch.device(settings.device)
    model.to(device).train()
    optimizer, scheduler = make_optimizer(model, settings)
    stride = math.prod(config.conv_stride)
    batches = length_grouped_batches([w.size for w in waves], settings.batch_size, settings.seed)
    history, window, recent, step = [], [], deque(maxlen=settings.log_every), 0  # recent: the final metrics
    train_start = time.monotonic()
    while step < settings.steps and time.monotonic() < deadline:
        rng = np.random.default_rng((settings.seed, step, 1))
        inputs, targets = crop_batch(waves, labels, next(batches), rng.uniform(settings.min_crop, settings.max_crop),
                                     stride, model.num_frames, rng)  # (B, T), (B, F)
        seed = int(np.random.SeedSequence((settings.seed, step, 2)).generate_state(1)[0])
        mask = span_mask(*targets.shape, settings.mask_prob, settings.mask_length, seed)  # (B, F)
        inputs, targets, mask = inputs.to(device), targets.to(device), mask.to(device)
        loss, accuracy = masked_prediction_loss(model(inputs, mask), targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        window.append((loss.item(), accuracy.item(), grad_norm.item(), inputs.shape[1] / SAMPLE_RATE,
                       mask.float().mean().item()))
        recent.append(window[-1][:2])
        if step % settings.log_every == 0 or step == settings.steps:
            loss_, acc, grad, crop, masked = np.mean(window, axis=0).tolist()
            seconds = time.monotonic() - train_start
            history.append({"step": step, "loss": loss_, "accuracy": acc, "grad_norm": grad, "crop_seconds": crop,
                            "masked_fraction": masked, "lr": scheduler.get_last_lr()[0], "seconds": seconds})
            logger.info("step %d/%d loss %.3f masked acc %.3f (chance %.3f) grad %.2f lr %.2e crop %.1f s "
                        "masked %.2f %.2f s/step", step, settings.steps, loss_, acc, 1 / settings.clusters, grad,
                        scheduler.get_last_lr()[0], crop, masked, seconds / step)
            window = []
    if window:  # the steps after the last log line (a time budget ran out)
        loss_, acc = np.mean(window, axis=0).tolist()[:2]
        history.append({"step": step, "loss": loss_, "accuracy": acc, "seconds": time.monotonic() - train_start})
    train_seconds = time.monotonic() - train_start
    if step < settings.steps:
        logger.warning("time budget of %.1f min reached after %d of %d steps", settings.max_minutes, step,
                       settings.steps)
    record = {
        "settings": dataclasses.asdict(settings),
        "steps_done": step,
        "stopped_by_time": step < settings.steps,
        "final": dict(zip(("loss", "accuracy"), np.mean(recent, axis=0).tolist(), strict=True)) if recent else None,
        "chance_accuracy": 1 / settings.clusters,
        "majority_accuracy": usage["largest_share"],
        "clusters": usage,
        "corpus": {"utterances": len(waves), "hours": sum(w.size for w in waves) / SAMPLE_RATE / 3600},
        "parameters": sum(p.numel() for p in model.hubert.parameters()),
        "seconds_per_step": train_seconds / max(1, step),
        "train_seconds": train_seconds,
        "history": history,
        "kmeans": kmeans_state,
    }
    return model, record


def save_teacher(model: HubertPretrainer, record: dict, output: Path, seconds: float) -> dict:
    """The `HubertModel` and its feature extractor (an `AutoModel` folder), kmeans.npz and pretraining.json."""
    output.mkdir(parents=True, exist_ok=True)
    model.hubert.cpu().eval().save_pretrained(output)
    default_feature_extractor().save_pretrained(output)
    np.savez(output / "kmeans.npz", **record.pop("kmeans"))
    record["size_mb"] = sum(p.stat().st_size for p in output.glob("*.safetensors")) / 1e6
    record["seconds"] = seconds
    (output / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("saved a %.2f MB teacher (%d parameters) to %s", record["size_mb"], record["parameters"], output)
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(PretrainSettings):
        parser.add_argument(f"--{field.name}", type=str if field.type == (str | None) else field.type,
                            default=field.default)
    settings = PretrainSettings(**vars(parser.parse_args(argv)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    if settings.data is None:
        parser.error("give --data DIR: a folder of speech (e.g. the corpus/ of python -m "
                     "hf_corrdistill.tools.superb_mini)")
    start = time.monotonic()
    model, record = pretrain(settings, load_waves(settings.data))
    return save_teacher(model, record, Path(settings.output), time.monotonic() - start)


if __name__ == "__main__":
    main()
