import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel

from hf_corrdistill import CorrDistillConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo_data"


def tiny_student_config(**overrides) -> CorrDistillConfig:
    """A student the shape of `tiny_teacher` (32 wide, CNN 16 channels)."""
    values = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, teacher_hidden_size=32, pred_layer_ids=(1, 2, 3),
    )
    values.update(overrides)
    return CorrDistillConfig(**values)


def tiny_teacher(seed: int = 0, **overrides) -> HubertModel:
    values = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0, mask_time_prob=0.0,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return HubertModel(HubertConfig(**values)).eval()


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The shipped demo corpus and teacher (rebuilt by `python -m hf_corrdistill.demo` if missing)."""
    if not (DEMO / "teacher" / "config.json").exists():
        if shutil.which("espeak-ng") is None:
            pytest.fail("demo_data/ is missing and espeak-ng is not installed to rebuild it")
        subprocess.run([sys.executable, "-m", "hf_corrdistill.demo", "--output", str(DEMO)], check=True)
    return DEMO
