"""hf-corrdistill: noise-robust distillation of self-supervised speech models via correlation metrics."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForPreTraining,
    AutoProcessor,
    Wav2Vec2Processor,
)

from .configuration_corrdistill import CorrDistillConfig
from .losses import CorrelationLossOutput, DistilHubertLossOutput, correlation_loss, distilhubert_loss
from .modeling_corrdistill import (
    CorrDistillForCTC,
    CorrDistillForPreTraining,
    CorrDistillForSequenceClassification,
    CorrDistillModel,
    CorrDistillPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(CorrDistillConfig.model_type, CorrDistillConfig, exist_ok=True)
AutoModel.register(CorrDistillConfig, CorrDistillModel, exist_ok=True)
AutoModelForPreTraining.register(CorrDistillConfig, CorrDistillForPreTraining, exist_ok=True)
AutoModelForAudioClassification.register(CorrDistillConfig, CorrDistillForSequenceClassification, exist_ok=True)
AutoModelForCTC.register(CorrDistillConfig, CorrDistillForCTC, exist_ok=True)
# As for HuBERT: a CTC folder (feature extractor + tokenizer) loads as one processor (the stock CTC script needs it).
AutoProcessor.register(CorrDistillConfig, Wav2Vec2Processor, exist_ok=True)
# Saved folders carry `auto_map` and the code, so `trust_remote_code=True` loads them without this package.
CorrDistillConfig.register_for_auto_class()
CorrDistillModel.register_for_auto_class("AutoModel")
CorrDistillForPreTraining.register_for_auto_class("AutoModelForPreTraining")
CorrDistillForSequenceClassification.register_for_auto_class("AutoModelForAudioClassification")
CorrDistillForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = [
    "CorrDistillConfig",
    "CorrDistillForCTC",
    "CorrDistillForPreTraining",
    "CorrDistillForSequenceClassification",
    "CorrDistillModel",
    "CorrDistillPreTrainedModel",
    "CorrelationLossOutput",
    "DistilHubertLossOutput",
    "correlation_loss",
    "distilhubert_loss",
]
