"""Plain-HuBERT export: loadable without custom code, same hidden states."""

import torch
from conftest import tiny_student_config
from transformers import HubertModel

from hf_corrdistill import CorrDistillForPreTraining
from hf_corrdistill.hub.export import export


def test_exported_hubert_matches_the_student(tmp_path):
    torch.manual_seed(0)
    student = CorrDistillForPreTraining(tiny_student_config()).eval()
    student.save_pretrained(tmp_path / "student")
    export(str(tmp_path / "student"), str(tmp_path / "hubert"))
    assert not list((tmp_path / "hubert").glob("*.py"))  # no custom code travels
    hubert = HubertModel.from_pretrained(tmp_path / "hubert").eval()
    audio = torch.randn(2, 16000)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 10000:] = 0
    audio = audio * mask
    with torch.no_grad():
        ours = student.corrdistill(audio, attention_mask=mask, output_hidden_states=True)
        theirs = hubert(audio, attention_mask=mask, output_hidden_states=True)
    valid = ours.frame_mask[..., None]
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
    for mine, plain in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert ((mine - plain).abs() * valid).max() <= 1e-5
