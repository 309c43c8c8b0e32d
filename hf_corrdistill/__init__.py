"""hf-corrdistill: noise-robust distillation of self-supervised speech models via correlation metrics.

`import hf_corrdistill` registers the models with the transformers Auto classes. The model code is heavy to import,
so train.py sets HF_CORRDISTILL_DEFER_MODELS=1 to check its configuration first and calls `register_auto_classes()`
once the checks have passed; the model classes are then imported on first use.
"""

import importlib
import os
from typing import Any

from transformers import AutoConfig

from .losses import CorrelationLossOutput, DistilHubertLossOutput, correlation_loss, distilhubert_loss
from .models.corrdistill.configuration_corrdistill import CorrDistillConfig

__version__ = "0.1.0"

DEFER_ENV = "HF_CORRDISTILL_DEFER_MODELS"
_MODEL_CLASSES = (
    "CorrDistillForCTC",
    "CorrDistillForPreTraining",
    "CorrDistillForSequenceClassification",
    "CorrDistillModel",
    "CorrDistillPreTrainedModel",
)

AutoConfig.register(CorrDistillConfig.model_type, CorrDistillConfig, exist_ok=True)
# Saved folders carry `auto_map` and the code, so `trust_remote_code=True` loads them without this package.
CorrDistillConfig.register_for_auto_class()


def register_auto_classes() -> None:
    """Register the models with AutoModel, AutoModelForPreTraining, AutoModelForAudioClassification and
    AutoModelForCTC, and for `auto_map` in saved configs, and the processor with AutoProcessor (the config module
    registers the config and the tokenizer on import). Safe to call more than once."""
    from transformers import (
        AutoModel,
        AutoModelForAudioClassification,
        AutoModelForCTC,
        AutoModelForPreTraining,
    )

    from .models.corrdistill import modeling_corrdistill as modeling
    from .models.corrdistill.configuration_corrdistill import register_processor

    register_processor()

    AutoModel.register(CorrDistillConfig, modeling.CorrDistillModel, exist_ok=True)
    AutoModelForPreTraining.register(CorrDistillConfig, modeling.CorrDistillForPreTraining, exist_ok=True)
    AutoModelForAudioClassification.register(CorrDistillConfig, modeling.CorrDistillForSequenceClassification,
                                             exist_ok=True)
    AutoModelForCTC.register(CorrDistillConfig, modeling.CorrDistillForCTC, exist_ok=True)
    modeling.CorrDistillModel.register_for_auto_class("AutoModel")
    modeling.CorrDistillForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    modeling.CorrDistillForSequenceClassification.register_for_auto_class("AutoModelForAudioClassification")
    modeling.CorrDistillForCTC.register_for_auto_class("AutoModelForCTC")


def __getattr__(name: str) -> Any:  # the model classes, imported on first use
    if name in _MODEL_CLASSES:
        return getattr(importlib.import_module(".models.corrdistill.modeling_corrdistill", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if os.environ.get(DEFER_ENV) != "1":
    register_auto_classes()

__all__ = [
    "CorrDistillConfig",
    *_MODEL_CLASSES,
    "CorrelationLossOutput",
    "DistilHubertLossOutput",
    "correlation_loss",
    "distilhubert_loss",
    "register_auto_classes",
]
