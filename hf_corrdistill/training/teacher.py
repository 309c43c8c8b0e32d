"""The frozen teacher: loading, compatibility checks, hidden-state targets and student initialisation."""

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig

from ..models.corrdistill.configuration_corrdistill import CorrDistillConfig

if TYPE_CHECKING:  # the checks above need configs only, so train.py fails fast without loading the model code
    from transformers import PreTrainedModel

    from ..models.corrdistill.modeling_corrdistill import CorrDistillForPreTraining

logger = logging.getLogger(__name__)


class TeacherError(ValueError):
    """A teacher that cannot serve the requested student; the message says what does not fit."""


def _hub_hint(name_or_path: str) -> str:
    return (
        f"{name_or_path!r} is not a local folder and could not be fetched from the Hugging Face Hub. Download it "
        f"where the Hub is reachable (`hf download {name_or_path} --local-dir DIR`) and pass the folder, or, "
        "if it is already in the local cache, set HF_HUB_OFFLINE=1."
    )


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One TCP connection to the Hub endpoint (HF_ENDPOINT, else https://huggingface.co): fails in seconds where
    the library's own retries take half a minute."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_teacher_config(name_or_path: str) -> PreTrainedConfig:
    """The teacher's config, failing fast and clearly when a Hub id cannot be reached."""
    local = Path(name_or_path).is_dir()
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not local and not offline and not _hub_reachable():
        raise TeacherError(_hub_hint(name_or_path))
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        detail = f"cannot load a teacher config from {name_or_path}: {error}"
        raise TeacherError(detail if local else _hub_hint(name_or_path)) from error


def load_teacher(name_or_path: str, dtype: torch.dtype = torch.float32) -> "PreTrainedModel":
    """Load an audio encoder with `AutoModel`, frozen and in eval mode (layerdrop off, so no layer goes missing)."""
    try:
        teacher = AutoModel.from_pretrained(name_or_path, dtype=dtype)
    except OSError as error:
        raise TeacherError(_hub_hint(name_or_path)) from error
    teacher.eval().requires_grad_(False)
    return teacher


def _frame_geometry(config: PreTrainedConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(getattr(config, "conv_kernel", ())), tuple(getattr(config, "conv_stride", ()))


def check_compatible(student: CorrDistillConfig, teacher: PreTrainedConfig, teacher_name: str = "teacher") -> None:
    """Raise `TeacherError` when the teacher cannot provide the student's targets frame by frame."""
    depth = getattr(teacher, "num_hidden_layers", None)
    width = getattr(teacher, "hidden_size", None)
    if depth is None or width is None or not hasattr(teacher, "conv_stride"):
        raise TeacherError(f"{teacher_name} ({teacher.model_type}) is not a CNN + transformer audio encoder")
    too_deep = [layer for layer in student.pred_layer_ids if layer > depth]
    if too_deep:
        raise TeacherError(f"predicted layer(s) {too_deep} exceed the depth of {teacher_name} ({depth} layers)")
    if student.teacher_hidden_size != width:
        raise TeacherError(
            f"student heads predict {student.teacher_hidden_size} features but {teacher_name} has hidden size {width}"
        )
    if _frame_geometry(student) != _frame_geometry(teacher):
        raise TeacherError(
            f"frame rates differ: student CNN kernels/strides {_frame_geometry(student)} vs {teacher_name} "
            f"{_frame_geometry(teacher)}; targets must align frame by frame"
        )


def teacher_targets(
    teacher: "PreTrainedModel",
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer_ids: tuple[int, ...],
) -> torch.Tensor:
    """Hidden states of the predicted teacher layers, stacked: (B, T) samples -> (B, N, F, D), in the teacher's
    precision (the input is cast to it)."""
    outputs = teacher(input_values.to(teacher.dtype), attention_mask=attention_mask, output_hidden_states=True)
    hidden = outputs.hidden_states  # (num_layers + 1) x (B, F, D); index k = output of layer k
    return torch.stack([hidden[k] for k in layer_ids], dim=1)  # (B, N, F, D)


# Student parameter groups copied from the teacher, by HuBERT parameter name.
_SHARED_PREFIXES = ("feature_extractor.", "feature_projection.", "encoder.pos_conv_embed.", "encoder.layer_norm.")


def init_student_from_teacher(student: "CorrDistillForPreTraining", teacher: "PreTrainedModel") -> list[str]:
    """Copy CNN, projection, positional conv, encoder LayerNorm and the first K layers of the teacher.

    Parameters are matched by name (the student mirrors HuBERT's names). A student parameter in those groups that
    the teacher lacks, or has with another shape, is an error naming it. Returns the copied names.
    """
    backbone = student.corrdistill
    num_layers = student.config.num_hidden_layers
    teacher_depth = getattr(teacher.config, "num_hidden_layers", 0)
    if num_layers > teacher_depth:
        raise TeacherError(f"the student has {num_layers} layers but the teacher only {teacher_depth} to copy from")
    source = teacher.state_dict()
    wanted = [
        name
        for name in backbone.state_dict()
        if name.startswith(_SHARED_PREFIXES) or name.startswith("encoder.layers.")
    ]
    problems = []
    for name in wanted:
        if name not in source:
            problems.append(f"{name}: missing in the teacher")
        elif source[name].shape != backbone.state_dict()[name].shape:
            problems.append(f"{name}: student {tuple(backbone.state_dict()[name].shape)} vs teacher "
                            f"{tuple(source[name].shape)}")
    if problems:
        raise TeacherError(
            "cannot initialise the student from the teacher (set init_from_teacher false, or match the sizes):\n  "
            + "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        )
    backbone.load_state_dict({name: source[name] for name in wanted}, strict=False)
    logger.info("initialised %d student tensors from the teacher (%d layers)", len(wanted), num_layers)
    return wanted
