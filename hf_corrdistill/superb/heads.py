"""SUPERB downstream models on frozen features, as s3prl defines them.

- `WeightedLayerSum`: softmax-weighted sum of the upstream's layers, weights starting at zero (uniform).
- `UtteranceHead` (KS, IC): Linear(D, 256) -> mean over valid frames -> Linear(256, sum of class counts).
- `CTCHead` (ASR): Linear(D, 1024) -> 2 BiLSTM layers (1024 per direction, dropout 0.2) -> Linear to characters.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]  # (B, F)


class WeightedLayerSum(nn.Module):
    def __init__(self, num_layers: int, layer_norm: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.layer_norm = layer_norm

    def normalised_weights(self) -> torch.Tensor:
        return self.weights.softmax(-1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, F, D) -> (B, F, D)
        if self.layer_norm:
            hidden = F.layer_norm(hidden, hidden.shape[-1:])
        return torch.einsum("l,blfd->bfd", self.normalised_weights(), hidden)


class UtteranceHead(nn.Module):
    def __init__(self, dim: int, num_classes: tuple[int, ...], projector_dim: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.projector = nn.Linear(dim, projector_dim)
        self.classifier = nn.Linear(projector_dim, sum(num_classes))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        mask = frame_mask(lengths, features.shape[1]).unsqueeze(-1)  # (B, F, 1)
        projected = self.projector(features).masked_fill(~mask, 0)  # (B, F, P)
        pooled = projected.sum(1) / lengths.clamp(min=1)[:, None]  # (B, P): mean over valid frames
        return list(self.classifier(pooled).split(self.num_classes, dim=-1))  # one (B, C_k) per output


class CTCHead(nn.Module):
    def __init__(self, dim: int, vocab_size: int, projection: int = 1024, hidden: int = 1024, layers: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.projector = nn.Linear(dim, projection)
        self.lstms = nn.ModuleList(
            nn.LSTM(projection if i == 0 else 2 * hidden, hidden, batch_first=True, bidirectional=True)
            for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * hidden, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # -> (B, F, V) log-probs
        hidden = self.projector(features)  # (B, F, P)
        for lstm in self.lstms:
            packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hidden = self.dropout(pad_packed_sequence(lstm(packed)[0], batch_first=True,
                                                      total_length=features.shape[1])[0])  # (B, F, 2H)
        return self.output(hidden).log_softmax(-1)


def spec_augment(features: torch.Tensor, generator: torch.Generator, time_masks: int = 2, time_width: int = 40,
                 freq_masks: int = 4, freq_width: int = 50) -> torch.Tensor:
    """SUPERB's ASR SpecAugment on (B, F, D) features: zeroed time and feature-dimension bands (no time warp).
    ``freq_width`` is for 768-wide features (SUPERB's) and is scaled to the width at hand."""
    batch, frames, dim = features.shape
    freq_width = max(1, round(freq_width * dim / 768))
    mask = torch.zeros(batch, frames, dim, dtype=torch.bool)
    for b in range(batch):
        for size, width, count, axis in ((frames, time_width, time_masks, 0), (dim, freq_width, freq_masks, 1)):
            for _ in range(count):
                w = int(torch.randint(0, min(width, size) + 1, (1,), generator=generator))
                s = int(torch.randint(0, size - w + 1, (1,), generator=generator))
                if axis == 0:
                    mask[b, s : s + w, :] = True
                else:
                    mask[b, :, s : s + w] = True
    return features.masked_fill(mask.to(features.device), 0.0)
