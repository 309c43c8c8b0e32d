"""One description per objective, read by the training arguments, the trainer and the model card.

Adding an objective: write it as a pure function returning a `ModelOutput` of its terms (``loss`` first), add a
`LossSpec` here, give each of its hyper-parameters a `DistillationConfig` field named in ``fields``, and test it
against a plain reference in tests/test_losses.py.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers.utils import ModelOutput

from .correlation import correlation_loss
from .distilhubert import distilhubert_loss


@dataclass(frozen=True)
class LossSpec:
    """How the trainer calls an objective."""

    function: Callable[..., ModelOutput]
    fields: dict[str, str]  # DistillationConfig field -> keyword argument of ``function``
    needs_pairs: bool  # needs at least 2 utterances per batch (correlations)
    takes_snr: bool  # takes student_snr / teacher_snr (and ``gather``, for correlations over all processes)
    summary: str  # one line, for --help and the model card

    def defaults(self) -> dict[str, Any]:
        """The function's defaults by config field: a config's defaults are the function's, defined once."""
        parameters = inspect.signature(self.function).parameters
        return {field: parameters[argument].default for field, argument in self.fields.items()}

    def kwargs(self, config: Any) -> dict[str, Any]:
        """The keyword arguments ``config`` (any object with the fields) gives the function."""
        return {argument: getattr(config, field) for field, argument in self.fields.items()}


LOSSES: dict[str, LossSpec] = {
    "correlation": LossSpec(
        function=correlation_loss,
        fields={
            "correlation_style": "style",
            "pool_positions": "pool_positions",
            "lambda_cross": "lambda_cross",
            "lambda_self": "lambda_self",
            "diag_scale": "diag_scale",
            "cross_scale": "cross_scale",
            "self_scale": "self_scale",
            "cosine_weight": "cosine_weight",
            "weighting": "weighting",
            "weighting_snr_low": "snr_low",
            "weighting_snr_high": "snr_high",
        },
        needs_pairs=True,
        takes_snr=True,
        summary="L_CL: correlation (diagonal and off-diagonal) terms plus cosine, Ritter-Gutierrez et al. (2024)",
    ),
    "distilhubert": LossSpec(
        function=distilhubert_loss,
        fields={"cosine_weight": "cosine_weight"},
        needs_pairs=False,
        takes_snr=False,
        summary="L_KD: L1 plus cosine per predicted layer, DistilHuBERT (Chang et al., 2022)",
    ),
}


def loss_field_defaults() -> dict[str, Any]:
    """Every loss field's default, over all objectives; a field two objectives share must default alike."""
    merged: dict[str, Any] = {}
    for spec in LOSSES.values():
        for field, default in spec.defaults().items():
            if merged.setdefault(field, default) != default:
                raise AssertionError(f"loss field {field} has two defaults: {merged[field]} and {default}")
    return merged
