"""Export a student backbone as a plain `HubertModel` checkpoint, loadable without custom code.

    python -m hf_corrdistill.hub.export --student outputs/demo --output outputs/demo-hubert

The student mirrors HuBERT's parameter names, so the conversion is a change of config and of key prefix, as in
the transformers conversion of DistilHuBERT. The prediction heads are distillation-only and are dropped.
"""

import argparse
import logging
from pathlib import Path

from transformers import AutoModel, HubertConfig, HubertModel

from ..data.sources import default_feature_extractor
from ..models.corrdistill.configuration_corrdistill import CorrDistillConfig
from ..models.corrdistill.modeling_corrdistill import CorrDistillModel

logger = logging.getLogger(__name__)

# Fields that mean the same in both configs.
_SHARED_FIELDS = (
    "conv_dim", "conv_stride", "conv_kernel", "conv_bias", "feat_extract_norm", "feat_extract_activation",
    "feat_proj_layer_norm", "feat_proj_dropout", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "hidden_dropout", "attention_dropout", "activation_dropout", "layerdrop",
    "layer_norm_eps", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "initializer_range",
)


def hubert_config(config: CorrDistillConfig) -> HubertConfig:
    """The `HubertConfig` of the same backbone (post-LayerNorm encoder, as DistilHuBERT)."""
    return HubertConfig(**{name: getattr(config, name) for name in _SHARED_FIELDS}, do_stable_layer_norm=False)


def to_hubert(student: CorrDistillModel) -> HubertModel:
    """A `HubertModel` computing the same hidden states as ``student`` (eval mode)."""
    hubert = HubertModel(hubert_config(student.config))
    state = student.state_dict()
    missing, unexpected = hubert.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "masked_spec_embed"]  # HuBERT's SpecAugment vector, unused here
    if missing or unexpected:
        raise RuntimeError(f"student and HuBERT layouts differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hubert.eval()


def export(student_dir: str, output_dir: str) -> Path:
    """Write the backbone of the student saved in ``student_dir`` as a plain HuBERT checkpoint in ``output_dir``."""
    student = AutoModel.from_pretrained(student_dir)
    if not isinstance(student, CorrDistillModel):
        raise TypeError(f"{student_dir} holds a {type(student).__name__}, not a corrdistill student")
    hubert = to_hubert(student)
    hubert.save_pretrained(output_dir)
    default_feature_extractor().save_pretrained(output_dir)
    logger.info("wrote a plain HubertModel to %s", output_dir)
    return Path(output_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="folder of a saved student (train.py's output_dir)")
    parser.add_argument("--output", required=True, help="folder to write the HubertModel checkpoint into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    export(args.student, args.output)


if __name__ == "__main__":
    main()
