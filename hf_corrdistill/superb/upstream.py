"""Frozen upstreams: anything `AutoModel` loads that returns hidden states, or a classic FBANK / MFCC front end.

An upstream turns a list of 16 kHz waveforms into one ``(layers, frames, dim)`` tensor per waveform.
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from ..data.sources import SAMPLE_RATE, default_feature_extractor
from ..training.teacher import load_teacher_config
from ..utils.filterbank import Filterbank
from ..utils.fingerprint import file_digest

logger = logging.getLogger(__name__)


class UpstreamError(ValueError):
    """An upstream that cannot be loaded or used; the message names it."""


class PretrainedUpstream:
    """A Hub id or folder loaded with `AutoModel` (HuBERT, WavLM, wav2vec 2.0, data2vec-audio, our students)."""

    def __init__(self, name: str, spec: str, device: torch.device, trust_remote_code: bool = False):
        self.name, self.spec, self.device = name, spec, device
        folder = Path(spec)
        if folder.exists() and not (folder / "config.json").is_file():
            raise UpstreamError(f"upstream {name}: {spec} has no config.json (not a saved model folder)")
        try:
            config = load_teacher_config(spec) if not folder.exists() else AutoConfig.from_pretrained(
                spec, trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_pretrained(spec, config=config, trust_remote_code=trust_remote_code)
        except Exception as error:  # corrupt weights, unknown model type, unreachable Hub: one clear line
            raise UpstreamError(f"upstream {name}: cannot load {spec}: {str(error).splitlines()[0]}") from error
        self.model.eval().to(device)
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(spec)
        except (OSError, ValueError):
            logger.info("upstream %s has no preprocessor_config.json: raw waveforms, no normalisation", name)
            self.extractor = default_feature_extractor()
        if getattr(self.extractor, "sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise UpstreamError(f"upstream {name} expects {self.extractor.sampling_rate} Hz audio, not 16 kHz")
        # GroupNorm over time in the CNN (HuBERT/wav2vec 2.0 Base) sees padding: such models get equal lengths only
        self.accepts_padding = bool(getattr(self.extractor, "return_attention_mask", False)) and getattr(
            config, "feat_extract_norm", "layer") != "group"
        if self.accepts_padding and not self._padding_is_exact():
            logger.info("upstream %s: padded batches change its features; utterances of equal length only", name)
            self.accepts_padding = False
        self.num_layers = config.num_hidden_layers + 1
        self.hidden_size = config.hidden_size
        weights = [p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin") or p.name == "config.json"] \
            if folder.exists() else []
        self.fingerprint = file_digest(weights) if weights else f"{spec}@{getattr(config, '_commit_hash', None)}"

    def frames(self, samples: int) -> int:
        return int(self.model._get_feat_extract_output_lengths(samples))

    def _padding_is_exact(self) -> bool:
        """Whether a padded batch gives each utterance the features it gets alone (data2vec-audio's convolutional
        positional embedding, for one, spreads padding into real frames)."""
        rng = np.random.default_rng(0)
        waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (SAMPLE_RATE, SAMPLE_RATE * 3 // 4)]
        batched = self(waves)
        self.accepts_padding = False
        alone = self(waves[1:])[0]
        self.accepts_padding = True
        return torch.allclose(batched[1], alone, atol=1e-3, rtol=1e-3)

    @torch.inference_mode()
    def __call__(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """(L, F_i, D) float32 on the CPU per waveform; a padded batch only when the model takes an attention mask
        (otherwise callers pass waveforms of equal length)."""
        if not self.accepts_padding and len({w.size for w in waves}) > 1:
            raise ValueError(f"upstream {self.name} takes utterances of equal length only in one batch")
        inputs = self.extractor(waves, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt",
                                return_attention_mask=self.accepts_padding)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        output = self.model(**inputs, output_hidden_states=True)
        if output.hidden_states is None:
            raise UpstreamError(f"upstream {self.name} returns no hidden states")
        hidden = torch.stack(output.hidden_states, dim=1).float().cpu()  # (B, L, F, D)
        return [hidden[i, :, : self.frames(len(w))] for i, w in enumerate(waves)]


class FilterbankUpstream(Filterbank):
    """``fbank`` or ``mfcc`` features as an upstream of one "layer": the classic baselines of SUPERB."""

    def __init__(self, name: str, kind: str):
        super().__init__(kind)
        self.name, self.spec = name, kind
        self.num_layers = 1
        self.accepts_padding = False
        self.fingerprint = f"{kind}-v1"


BUILTIN = ("fbank", "mfcc")


def parse_upstream(spec: str) -> tuple[str, str]:
    """"NAME=PATH_OR_ID" or "PATH_OR_ID" (named after its last path part) -> (name, spec)."""
    name, _, target = spec.rpartition("=")
    if not name:
        target = spec
        name = Path(spec.rstrip("/")).name or spec
    return name, target


def check_upstream(name: str, spec: str, trust_remote_code: bool = False) -> None:
    """Before any work: the config loads and every safetensors file's header is whole (a truncated download fails
    here, not after the other upstreams' features)."""
    if spec in BUILTIN:
        return
    folder = Path(spec)
    if not folder.exists():
        try:
            load_teacher_config(spec)
        except ValueError as error:
            raise UpstreamError(f"upstream {name}: {error}") from error
        return
    if not (folder / "config.json").is_file():
        raise UpstreamError(f"upstream {name}: {spec} has no config.json (not a saved model folder)")
    try:
        AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
        for weights in folder.glob("*.safetensors"):
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
    except Exception as error:
        raise UpstreamError(f"upstream {name}: cannot load {spec}: {str(error).splitlines()[0]}") from error


def load_upstream(name: str, spec: str, device: torch.device, trust_remote_code: bool = False):
    if spec in BUILTIN:
        return FilterbankUpstream(name, spec)
    return PretrainedUpstream(name, spec, device, trust_remote_code)


FEATURES_VERSION = 1  # raise when the way features are computed changes: older caches are then not reused


def describe_upstream(upstream) -> dict:
    """What the features depend on besides the audio (part of every cache key)."""
    return {"spec": upstream.spec, "fingerprint": upstream.fingerprint, "layers": upstream.num_layers,
            "hidden_size": upstream.hidden_size, "padded_batches": upstream.accepts_padding,
            "features_version": FEATURES_VERSION}


def upstream_training_noise(spec: str) -> list[str]:
    """Noise sources a student of ours was distilled with (from its run_config.json), else none."""
    record = Path(spec) / "run_config.json"
    if not record.is_file():
        return []
    return list(json.loads(record.read_text()).get("data.noise_sources") or [])
