"""The student in Hugging Face form: sizes, masks, auto classes, saving, remote code and teacher initialisation."""

import json

import pytest
import torch
from conftest import remote_hidden_states, tiny_student_config, tiny_teacher
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_corrdistill import CorrDistillConfig, CorrDistillForPreTraining, CorrDistillModel
from hf_corrdistill.training.teacher import TeacherError, check_compatible, init_student_from_teacher, teacher_targets


def test_default_backbone_is_distilhubert_sized():
    model = CorrDistillModel(CorrDistillConfig())
    assert 23.4e6 < model.num_parameters() < 23.6e6  # DistilHuBERT: 23.49M
    assert len(model.encoder.layers) == 2


def test_outputs_shapes_and_hidden_state_indexing():
    model = CorrDistillForPreTraining(tiny_student_config()).eval()
    audio = torch.randn(3, 16000)
    mask = torch.ones(3, 16000, dtype=torch.long)
    mask[1, 9000:] = 0
    out = model(audio, attention_mask=mask, output_hidden_states=True)
    assert out.predictions.shape == (3, 3, 49, 32)  # (B, N, F, D_teacher)
    assert len(out.hidden_states) == 3  # encoder input + 2 layers
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert out.frame_mask.sum(1).tolist() == [49, 27, 49]
    assert model(audio).frame_mask is None


def test_padding_does_not_change_valid_frames():
    model = CorrDistillModel(tiny_student_config(feat_extract_norm="layer")).eval()  # GroupNorm sees padding
    audio = torch.randn(2, 16000)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 8000:] = 0
    padded = model(audio * mask, attention_mask=mask).last_hidden_state
    alone = model(audio[1:, :8000]).last_hidden_state
    frames = alone.shape[1]
    torch.testing.assert_close(padded[1, :frames], alone[0], atol=1e-5, rtol=1e-5)


def test_auto_classes_resolve():
    config = tiny_student_config()
    assert isinstance(AutoConfig.for_model("corrdistill"), CorrDistillConfig)
    assert type(AutoModel.from_config(config)) is CorrDistillModel
    assert type(AutoModelForPreTraining.from_config(config)) is CorrDistillForPreTraining


def test_save_and_reload_backbone_from_pretraining_checkpoint(tmp_path):
    model = CorrDistillForPreTraining(tiny_student_config()).eval()
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_corrdistill.CorrDistillModel"
    assert {"AutoConfig", "AutoModelForPreTraining"} <= set(auto_map)
    assert (tmp_path / "modeling_corrdistill.py").exists() and (tmp_path / "configuration_corrdistill.py").exists()
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    audio = torch.randn(2, 8000)
    torch.testing.assert_close(backbone(audio).last_hidden_state, model(audio).last_hidden_state, rtol=0, atol=0)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(audio).predictions, model(audio).predictions, rtol=0, atol=0)


def test_trust_remote_code_in_a_fresh_process(tmp_path):
    model = CorrDistillForPreTraining(tiny_student_config()).eval()
    model.save_pretrained(tmp_path / "student")
    audio = torch.randn(2, 12000)
    with torch.no_grad():
        expected = torch.stack(model.corrdistill(audio, output_hidden_states=True).hidden_states)
    torch.testing.assert_close(remote_hidden_states(tmp_path / "student", audio, tmp_path), expected, rtol=0, atol=0)


def test_init_from_teacher_copies_matching_parts():
    teacher = tiny_teacher()
    student = CorrDistillForPreTraining(tiny_student_config())
    copied = init_student_from_teacher(student, teacher)
    assert any(name.startswith("encoder.layers.1.") for name in copied)
    source = teacher.state_dict()
    for name, tensor in student.corrdistill.state_dict().items():
        if name in copied:
            assert torch.equal(tensor, source[name]), name
    # the copied front end and first layers compute what the teacher's do (the teacher's feature LayerNorm aside)
    plain = tiny_teacher(feat_proj_layer_norm=False)
    plain.load_state_dict({k: v for k, v in teacher.state_dict().items() if "feature_projection.layer_norm" not in k})
    student = CorrDistillForPreTraining(tiny_student_config()).eval()
    init_student_from_teacher(student, plain)
    audio = torch.randn(2, 8000)
    with torch.no_grad():
        ours = student.corrdistill(audio, output_hidden_states=True).hidden_states
        theirs = plain(audio, output_hidden_states=True).hidden_states
    for k in range(3):
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=1e-5)


def test_teacher_targets_stack_requested_layers():
    teacher = tiny_teacher()
    audio = torch.randn(2, 8000)
    targets = teacher_targets(teacher, audio, None, (1, 3))
    hidden = teacher(audio, output_hidden_states=True).hidden_states
    assert targets.shape == (2, 2, 24, 32)
    assert torch.equal(targets[:, 1], hidden[3])


@pytest.mark.parametrize(
    "overrides,teacher_overrides,message",
    [
        ({"pred_layer_ids": (2, 4)}, {}, "exceed the depth"),
        ({"teacher_hidden_size": 48}, {}, "hidden size 32"),
        ({"conv_stride": (5, 2, 2, 2, 2, 2, 1)}, {}, "frame rates differ"),
    ],
)
def test_incompatible_teacher_is_named(overrides, teacher_overrides, message):
    with pytest.raises(TeacherError, match=message):
        check_compatible(tiny_student_config(**overrides), tiny_teacher(**teacher_overrides).config)


def test_init_from_mismatched_teacher_names_the_tensor():
    student = CorrDistillForPreTraining(tiny_student_config(intermediate_size=128))
    with pytest.raises(TeacherError, match="intermediate_dense.weight"):
        init_student_from_teacher(student, tiny_teacher())
    with pytest.raises(TeacherError, match="only 1"):
        init_student_from_teacher(CorrDistillForPreTraining(tiny_student_config()), tiny_teacher(num_hidden_layers=1))


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_student_config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(0)
    model = CorrDistillForPreTraining(config).train()
    audio = torch.randn(2, 8000)
    model(audio).predictions.square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(audio).predictions.square().mean().backward()
    for before, after in zip(plain, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(before, after)
