import os
import random
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel

from hf_corrdistill import CorrDistillConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo_data"


@contextmanager
def seeded_globals(rng: np.random.Generator):
    """How the views drew audiomentations' parameters before they drew them themselves: the global `random` and
    NumPy generators seeded from one draw of ``rng`` (then restored), for checking that the draws are unchanged."""
    py_state, np_state = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def require_espeak() -> None:
    """Tests that speak need espeak-ng: skipped where it is missing, except under CI, which must run them."""
    if shutil.which("espeak-ng") is None:
        message = "espeak-ng is not installed (apt-get install espeak-ng): it speaks the generated sets"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def espeak() -> None:
    """Use in a test that calls espeak-ng."""
    require_espeak()


def tiny_student_config(**overrides) -> CorrDistillConfig:
    """A student the shape of `tiny_teacher` (32 wide, CNN 16 channels)."""
    values = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, teacher_hidden_size=32, pred_layer_ids=(1, 2, 3),
    )
    values.update(overrides)
    return CorrDistillConfig(**values)


def save_tiny_student(folder: Path) -> Path:
    """A distilled student as `train.py` leaves it (the pre-training model and the feature extractor), seed 0."""
    from hf_corrdistill import CorrDistillForPreTraining
    from hf_corrdistill.data.sources import default_feature_extractor

    torch.manual_seed(0)
    CorrDistillForPreTraining(tiny_student_config()).save_pretrained(folder)
    default_feature_extractor().save_pretrained(folder)
    return folder


def tiny_teacher(seed: int = 0, **overrides) -> HubertModel:
    values = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0, mask_time_prob=0.0,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return HubertModel(HubertConfig(**values)).eval()


REMOTE = """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "hf_corrdistill" not in sys.modules, "the package was imported"
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
with torch.no_grad():
    torch.save(torch.stack(model(torch.load(sys.argv[2]), output_hidden_states=True).hidden_states), sys.argv[3])
"""


def remote_hidden_states(folder: Path, audio: torch.Tensor, scratch: Path) -> torch.Tensor:
    """Hidden states of a saved student loaded with trust_remote_code in a fresh process without this package."""
    torch.save(audio, scratch / "remote_audio.pt")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(folder), str(scratch / "remote_audio.pt"), str(scratch / "remote_h.pt")],
        capture_output=True, text=True, cwd=scratch,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(scratch / "remote_h.pt")


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The shipped demo corpus, noise and tiny teacher (rebuilt by
    `python -m hf_corrdistill.tools.demo` if missing)."""
    if not (DEMO / "tiny_teacher" / "config.json").exists():
        if shutil.which("espeak-ng") is None:
            pytest.fail("demo_data/ is missing and espeak-ng is not installed to rebuild it")
        subprocess.run([sys.executable, "-m", "hf_corrdistill.tools.demo", "--output", str(DEMO)], check=True)
    return DEMO
