"""DistilHuBERT-style student: a HuBERT-shaped backbone and the distillation prediction heads (METHOD.md section 2).

This file is copied next to saved checkpoints for ``trust_remote_code`` loading: it imports only torch,
transformers and its sibling ``configuration_corrdistill``. Parameter names mirror ``HubertModel`` so that the
backbone initialises from, and converts to, a HuBERT checkpoint by name.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_corrdistill import CorrDistillConfig


@dataclass
class CorrDistillModelOutput(ModelOutput):
    """
    Output of [`CorrDistillModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, frames, hidden_size)`): Output of the last layer.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True`: the encoder input (index 0) and the output of every layer (index k),
            each `(batch, frames, hidden_size)`, indexed like HuBERT's.
        extract_features (`torch.FloatTensor` of shape `(batch, frames, conv_dim[-1])`): CNN encoder output.
        frame_mask (`torch.BoolTensor` of shape `(batch, frames)`, *optional*):
            True for frames computed from real samples; `None` when no `attention_mask` was given.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    extract_features: torch.FloatTensor | None = None
    frame_mask: torch.BoolTensor | None = None


@dataclass
class CorrDistillForPreTrainingOutput(ModelOutput):
    """
    Output of [`CorrDistillForPreTraining`].

    Args:
        predictions (`torch.FloatTensor` of shape `(batch, num_pred_layers, frames, teacher_hidden_size)`):
            One prediction per entry of `config.pred_layer_ids`.
        last_hidden_state, hidden_states, frame_mask: As in [`CorrDistillModelOutput`].
    """

    predictions: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    frame_mask: torch.BoolTensor | None = None


class CorrDistillConvLayer(GradientCheckpointingLayer):
    """One CNN block: conv -> optional GroupNorm/LayerNorm -> activation (HuBERT's three conv-layer kinds)."""

    def __init__(self, config: CorrDistillConfig, layer_id: int):
        super().__init__()
        in_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_dim = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(
            in_dim, out_dim, config.conv_kernel[layer_id], stride=config.conv_stride[layer_id], bias=config.conv_bias
        )
        self.norm_kind = config.feat_extract_norm if (layer_id == 0 or config.feat_extract_norm == "layer") else None
        if self.norm_kind == "group":
            self.layer_norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, affine=True)
        elif self.norm_kind == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        self.activation = ACT2FN[config.feat_extract_activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states)  # (B, C, T')
        if self.norm_kind == "group":
            hidden_states = self.layer_norm(hidden_states)
        elif self.norm_kind == "layer":
            hidden_states = self.layer_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        return self.activation(hidden_states)


class CorrDistillFeatureEncoder(nn.Module):
    """The CNN waveform encoder: (B, T) samples -> (B, conv_dim[-1], F) frames."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.conv_layers = nn.ModuleList(CorrDistillConvLayer(config, i) for i in range(len(config.conv_dim)))

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden_states = input_values[:, None]  # (B, 1, T)
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states)
        return hidden_states  # (B, C, F)


class CorrDistillFeatureProjection(nn.Module):
    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        if config.feat_proj_layer_norm:
            self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "layer_norm"):
            features = self.layer_norm(features)
        return self.dropout(self.projection(features))  # (B, F, H)


class CorrDistillPositionalConvEmbedding(nn.Module):
    """Weight-normalised grouped convolution over time, as in wav2vec 2.0 / HuBERT."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        kernel = config.num_conv_pos_embeddings
        conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=kernel,
            padding=kernel // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.remove_last = kernel % 2 == 0  # "same" length for even kernels
        self.activation = ACT2FN[config.feat_extract_activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        frames = hidden_states.shape[1]
        position = self.conv(hidden_states.transpose(1, 2))  # (B, H, F + 1 if even kernel)
        position = position[:, :, :frames] if self.remove_last else position
        return self.activation(position).transpose(1, 2)  # (B, F, H)


class CorrDistillAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (flash / memory-efficient kernels)."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, frames, width = hidden_states.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, heads, F, head_dim)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, F), True = attend
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, F, head_dim)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, width))


class CorrDistillFeedForward(nn.Module):
    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(hidden_states)))
        return self.output_dropout(self.output_dense(hidden_states))


class CorrDistillEncoderLayer(GradientCheckpointingLayer):
    """Post-LayerNorm transformer layer (HuBERT Base / DistilHuBERT)."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.attention = CorrDistillAttention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = CorrDistillFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = self.layer_norm(hidden_states + self.dropout(self.attention(hidden_states, key_mask)))
        return self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))


class CorrDistillEncoder(nn.Module):
    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.layerdrop = config.layerdrop
        self.pos_conv_embed = CorrDistillPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(CorrDistillEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self, hidden_states: torch.Tensor, frame_mask: torch.Tensor | None, output_hidden_states: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        if frame_mask is not None:
            hidden_states = hidden_states.masked_fill(~frame_mask[..., None], 0.0)  # padded frames read as silence
        hidden_states = hidden_states + self.pos_conv_embed(hidden_states)
        hidden_states = self.dropout(self.layer_norm(hidden_states))  # (B, F, H)
        all_hidden = [hidden_states]
        for layer in self.layers:
            skipped = self.training and self.layerdrop > 0 and torch.rand([]).item() < self.layerdrop
            if not skipped:
                hidden_states = layer(hidden_states, frame_mask)
            all_hidden.append(hidden_states)  # a skipped layer repeats its input, so indices stay aligned
        return hidden_states, (tuple(all_hidden) if output_hidden_states else None)


# Written into every saved config, so `trust_remote_code=True` finds each class beside the copied code.
AUTO_MAP = {
    "AutoConfig": "configuration_corrdistill.CorrDistillConfig",
    "AutoModel": "modeling_corrdistill.CorrDistillModel",
    "AutoModelForPreTraining": "modeling_corrdistill.CorrDistillForPreTraining",
}


class CorrDistillPreTrainedModel(PreTrainedModel):
    config_class = CorrDistillConfig
    base_model_prefix = "corrdistill"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CorrDistillEncoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, CorrDistillPositionalConvEmbedding):
            conv = module.conv  # fairseq's initialisation, with the weight-norm magnitude matching the direction
            direction = conv.parametrizations.weight.original1  # (H, H / groups, kernel)
            init.normal_(direction, mean=0.0, std=(4.0 / (conv.kernel_size[0] * conv.in_channels)) ** 0.5)
            init.copy_(conv.parametrizations.weight.original0, direction.norm(dim=(0, 1), keepdim=True))
            init.zeros_(conv.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d) and not hasattr(module, "parametrizations"):
            init.kaiming_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # registered for auto classes: make the folder load without this package
            self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor | int) -> torch.Tensor | int:
        """Number of frames the CNN makes of `input_lengths` samples."""
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            input_lengths = (input_lengths - kernel) // stride + 1
        return input_lengths

    def _get_feature_vector_attention_mask(self, frames: int, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sample-level mask (B, T) -> frame-level bool mask (B, F), True for frames of real samples."""
        lengths = self._get_feat_extract_output_lengths(attention_mask.long().sum(-1))  # (B,)
        return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]  # (B, F)


class CorrDistillModel(CorrDistillPreTrainedModel):
    """The student backbone: what `AutoModel` returns and downstream tasks use."""

    _keys_to_ignore_on_load_unexpected = [r"prediction_heads\."]

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        self.feature_extractor = CorrDistillFeatureEncoder(config)
        self.feature_projection = CorrDistillFeatureProjection(config)
        self.encoder = CorrDistillEncoder(config)
        self.post_init()

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the CNN (as `HubertModel.freeze_feature_encoder`)."""
        self.feature_extractor.requires_grad_(False)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CorrDistillModelOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz waveforms, zero-padded.
            attention_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*): 1 for real samples.
            output_hidden_states (`bool`, *optional*): Return the encoder input and every layer's output.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        features = self.feature_extractor(input_values).transpose(1, 2)  # (B, F, C)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self._get_feature_vector_attention_mask(features.shape[1], attention_mask)  # (B, F)
        hidden_states = self.feature_projection(features)  # (B, F, H)
        last_hidden_state, hidden_states = self.encoder(hidden_states, frame_mask, output_hidden_states)
        output = CorrDistillModelOutput(
            last_hidden_state=last_hidden_state,
            hidden_states=hidden_states,
            extract_features=features,
            frame_mask=frame_mask,
        )
        return output if return_dict else output.to_tuple()


class CorrDistillPredictionHeads(nn.Module):
    """DistilHuBERT heads: Linear(H -> H * N), GELU, then one Linear(H -> D_teacher) per predicted layer."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.num_heads = len(config.pred_layer_ids)
        self.shared = nn.Linear(config.hidden_size, config.hidden_size * self.num_heads)
        self.activation = nn.GELU()
        self.heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.teacher_hidden_size) for _ in config.pred_layer_ids
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        expanded = self.activation(self.shared(hidden_states))  # (B, F, H * N)
        per_head = expanded.chunk(self.num_heads, dim=-1)  # N x (B, F, H)
        predictions = [head(x) for head, x in zip(self.heads, per_head, strict=True)]  # N x (B, F, D_teacher)
        return torch.stack(predictions, dim=1)  # (B, N, F, D_teacher)


class CorrDistillForPreTraining(CorrDistillPreTrainedModel):
    """Backbone + prediction heads: the model the distillation trains. Heads serve distillation only."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        self.corrdistill = CorrDistillModel(config)
        self.prediction_heads = CorrDistillPredictionHeads(config)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CorrDistillForPreTrainingOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        backbone = self.corrdistill(input_values, attention_mask, output_hidden_states=output_hidden_states)
        output = CorrDistillForPreTrainingOutput(
            predictions=self.prediction_heads(backbone.last_hidden_state),  # (B, N, F, D_teacher)
            last_hidden_state=backbone.last_hidden_state,
            hidden_states=backbone.hidden_states,
            frame_mask=backbone.frame_mask,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "CorrDistillForPreTraining",
    "CorrDistillForPreTrainingOutput",
    "CorrDistillModel",
    "CorrDistillModelOutput",
    "CorrDistillPreTrainedModel",
]
