"""DistilHuBERT-style student: a HuBERT-shaped backbone and the distillation prediction heads
(hf-corrdistill docs/method.md, "The student").

This file is copied next to saved checkpoints for ``trust_remote_code`` loading: it imports only torch,
transformers and its sibling ``configuration_corrdistill``. Parameter names mirror ``HubertModel`` so that the
backbone initialises from, and converts to, a HuBERT checkpoint by name.

Fine-tuning heads (`CorrDistillForSequenceClassification`, `CorrDistillForCTC`) wrap the backbone under the same
attribute as `CorrDistillForPreTraining` (`corrdistill`), so a distilled student folder loads into them directly.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutput, SequenceClassifierOutput
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
        enhancement (`torch.FloatTensor` of shape `(batch, frames, enhancement_bins)`, *optional*):
            The enhancement head's log-mel frames; `None` when `config.enhancement_bins` is 0.
        last_hidden_state, hidden_states, frame_mask: As in [`CorrDistillModelOutput`].
    """

    predictions: torch.FloatTensor | None = None
    enhancement: torch.FloatTensor | None = None
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
    "AutoModelForAudioClassification": "modeling_corrdistill.CorrDistillForSequenceClassification",
    "AutoModelForCTC": "modeling_corrdistill.CorrDistillForCTC",
}


def compute_span_mask(
    lengths: torch.Tensor, size: int, mask_prob: float, mask_length: int, min_masks: int = 0
) -> torch.BoolTensor:
    """
    Random SpecAugment spans, drawn from torch's generator on `lengths.device`.

    Row `b` gets `int(mask_prob * lengths[b] / mask_length + u)` spans (`u ~ U[0, 1)` shared by the batch: rounding
    at random), at least `min_masks` and at most as many as there are start positions. Starts are distinct and
    uniform over the positions whose span ends inside the row's first `lengths[b]` entries; spans may overlap. A row
    shorter than `mask_length` gets none.

    Args:
        lengths (`torch.LongTensor` of shape `(batch,)`): Valid length of each row.
        size (`int`): Padded length of the rows.
        mask_prob (`float`), mask_length (`int`), min_masks (`int`): As `config.mask_time_*` / `mask_feature_*`.

    Returns:
        `torch.BoolTensor` of shape `(batch, size)`: True where masked.
    """
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    device = lengths.device
    positions = torch.arange(size, device=device)  # (S,)
    num_starts = (lengths - mask_length + 1).clamp(min=0)  # (B,)
    wanted = (mask_prob * lengths / mask_length + torch.rand((), device=device)).long().clamp(min=min_masks)
    counts = torch.minimum(wanted, num_starts)  # (B,)
    scores = torch.rand(lengths.shape[0], size, device=device).masked_fill(positions >= num_starts[:, None], -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # (B, S): place of each position in a random order
    starts = rank < counts[:, None]  # (B, S): `counts` distinct valid starts per row
    seen = F.pad(starts.long().cumsum(dim=1), (mask_length, 0))  # (B, S + L): starts up to each position
    return (seen[:, mask_length:] - seen[:, :-mask_length]) > 0  # a start within the last L positions covers it


class CorrDistillPreTrainedModel(PreTrainedModel):
    config_class = CorrDistillConfig
    base_model_prefix = "corrdistill"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CorrDistillEncoderLayer"]
    _supports_sdpa = True
    # Distillation heads are not used after distillation; the SpecAugment vector is learned in fine-tuning only.
    _keys_to_ignore_on_load_unexpected = [r"prediction_heads\.", r"enhancement_head\.", r"masked_spec_embed"]

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
        elif isinstance(module, CorrDistillModel) and hasattr(module, "masked_spec_embed"):
            init.uniform_(module.masked_spec_embed)
        elif isinstance(module, CorrDistillForSequenceClassification) and hasattr(module, "layer_weights"):
            init.constant_(module.layer_weights, 1.0 / module.layer_weights.numel())  # a plain mean to start

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
    """
    The student backbone: what `AutoModel` returns and downstream tasks use.

    In training mode with `config.apply_spec_augment`, SpecAugment masks the projected CNN features before the
    encoder, as HuBERT does: `config.mask_time_prob > 0` replaces random spans of frames by the learned vector
    `masked_spec_embed` (created only then, so a distilled student has none and gains it, newly initialised, when
    fine-tuned with masking), and `config.mask_feature_prob > 0` zeroes random spans of channels.
    """

    # Absent from every distilled student by design: created for fine-tuning with time masking, not worth a warning.
    _keys_to_ignore_on_load_missing = [r"masked_spec_embed"]

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        self.feature_extractor = CorrDistillFeatureEncoder(config)
        self.feature_projection = CorrDistillFeatureProjection(config)
        if config.mask_time_prob > 0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size))
        self.encoder = CorrDistillEncoder(config)
        self.post_init()

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the CNN (as `HubertModel.freeze_feature_encoder`)."""
        self.feature_extractor.requires_grad_(False)

    def _mask_hidden_states(
        self,
        hidden_states: torch.Tensor,
        frame_mask: torch.Tensor | None,
        mask_time_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SpecAugment on `hidden_states` (B, F, H); the identity in eval mode unless `mask_time_indices` is given."""
        if not self.config.apply_spec_augment:
            return hidden_states
        batch, frames, width = hidden_states.shape
        if mask_time_indices is None and self.training and self.config.mask_time_prob > 0:
            lengths = frame_mask.sum(-1) if frame_mask is not None else torch.full((batch,), frames)
            mask_time_indices = compute_span_mask(
                lengths.to(hidden_states.device),
                frames,
                self.config.mask_time_prob,
                self.config.mask_time_length,
                self.config.mask_time_min_masks,
            )  # (B, F)
        if mask_time_indices is not None:
            if not hasattr(self, "masked_spec_embed"):
                raise ValueError("time masking needs masked_spec_embed: build the model with mask_time_prob > 0")
            fill = self.masked_spec_embed.to(hidden_states.dtype)  # (H,)
            hidden_states = torch.where(mask_time_indices.to(hidden_states.device)[..., None], fill, hidden_states)
        if self.training and self.config.mask_feature_prob > 0:
            channels = compute_span_mask(
                torch.full((batch,), width, device=hidden_states.device),
                width,
                self.config.mask_feature_prob,
                self.config.mask_feature_length,
                self.config.mask_feature_min_masks,
            )  # (B, H), the same channels for every frame of an utterance
            hidden_states = hidden_states.masked_fill(channels[:, None, :], 0.0)
        return hidden_states

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        mask_time_indices: torch.Tensor | None = None,
        **kwargs,
    ) -> CorrDistillModelOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz waveforms, zero-padded.
            attention_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*): 1 for real samples.
            output_hidden_states (`bool`, *optional*): Return the encoder input and every layer's output.
            mask_time_indices (`torch.BoolTensor` of shape `(batch, frames)`, *optional*):
                Frames to replace by `masked_spec_embed`, in any mode, instead of random SpecAugment spans.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        features = self.feature_extractor(input_values).transpose(1, 2)  # (B, F, C)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self._get_feature_vector_attention_mask(features.shape[1], attention_mask)  # (B, F)
        hidden_states = self.feature_projection(features)  # (B, F, H)
        hidden_states = self._mask_hidden_states(hidden_states, frame_mask, mask_time_indices)
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


class CorrDistillEnhancementHead(nn.Module):
    """RobustDistiller's enhancement task: Linear(H -> H), GELU, Linear(H -> M) log-mel bins of the clean input."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__()
        self.hidden = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()
        self.output = nn.Linear(config.hidden_size, config.enhancement_bins)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.hidden(hidden_states)))  # (B, F, H) -> (B, F, M)


class CorrDistillForPreTraining(CorrDistillPreTrainedModel):
    """Backbone + prediction heads (+ the enhancement head when `config.enhancement_bins` > 0): the model the
    distillation trains. The heads serve distillation only: `CorrDistillModel` loads the backbone without them."""

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        self.corrdistill = CorrDistillModel(config)
        self.prediction_heads = CorrDistillPredictionHeads(config)
        self.enhancement_head = CorrDistillEnhancementHead(config) if config.enhancement_bins > 0 else None
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
        enhancement = None if self.enhancement_head is None else self.enhancement_head(backbone.last_hidden_state)
        output = CorrDistillForPreTrainingOutput(
            predictions=self.prediction_heads(backbone.last_hidden_state),  # (B, N, F, D_teacher)
            enhancement=enhancement,  # (B, F, M) or None
            last_hidden_state=backbone.last_hidden_state,
            hidden_states=backbone.hidden_states,
            frame_mask=backbone.frame_mask,
        )
        return output if return_dict else output.to_tuple()


class CorrDistillTaskModel(CorrDistillPreTrainedModel):
    """A task head on the backbone `self.corrdistill`, with HuBERT's freezing methods."""

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the CNN feature encoder."""
        self.corrdistill.freeze_feature_encoder()

    def freeze_base_model(self) -> None:
        """Stop gradients into the whole backbone: only the task head (and layer weights, if any) trains."""
        self.corrdistill.requires_grad_(False)


class CorrDistillForSequenceClassification(CorrDistillTaskModel):
    """
    Utterance classification (keyword spotting, speaker or emotion id), as `HubertForSequenceClassification`: the
    last layer, or a learned softmax-weighted sum of all `hidden_states` (`config.use_weighted_layer_sum`), projected
    to `config.classifier_proj_size`, mean-pooled over the valid frames and classified into `config.num_labels`.
    The loss is cross-entropy (`config.problem_type` is not consulted).
    """

    accepts_loss_kwargs = False  # the loss is a batch mean: `Trainer` must scale it for gradient accumulation

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        self.corrdistill = CorrDistillModel(config)
        if config.use_weighted_layer_sum:
            num_layers = config.num_hidden_layers + 1  # the encoder input and every layer
            self.layer_weights = nn.Parameter(torch.full((num_layers,), 1.0 / num_layers))
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz waveforms, zero-padded.
            attention_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*):
                1 for real samples; without it every frame is pooled.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): Class ids in `[0, config.num_labels)`.
            output_hidden_states (`bool`, *optional*): Return the backbone's `hidden_states`.

        Returns:
            [`SequenceClassifierOutput`] with `logits` of shape `(batch, num_labels)` and, given `labels`, `loss`.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        weighted = self.config.use_weighted_layer_sum
        outputs = self.corrdistill(
            input_values, attention_mask, output_hidden_states=weighted or output_hidden_states, return_dict=True
        )
        if weighted:
            stacked = torch.stack(outputs.hidden_states, dim=1)  # (B, L + 1, F, H)
            weights = self.layer_weights.softmax(dim=-1).to(stacked.dtype)  # (L + 1,)
            hidden_states = (stacked * weights[None, :, None, None]).sum(dim=1)  # (B, F, H)
        else:
            hidden_states = outputs.last_hidden_state  # (B, F, H)
        hidden_states = self.projector(hidden_states)  # (B, F, P)
        if outputs.frame_mask is None:
            pooled = hidden_states.mean(dim=1)  # (B, P)
        else:
            valid = outputs.frame_mask[..., None].to(hidden_states.dtype)  # (B, F, 1)
            pooled = (hidden_states * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)  # (B, P)
        logits = self.classifier(pooled)  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.to(logits.device).view(-1))
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()


class CorrDistillForCTC(CorrDistillTaskModel):
    """
    Connectionist temporal classification over `config.vocab_size` tokens (characters or phones), as `HubertForCTC`:
    dropout `config.final_dropout` and a linear `lm_head` on the last layer. The CTC blank is `config.pad_token_id`.
    """

    accepts_loss_kwargs = False  # the loss is a batch sum or mean: `Trainer` must scale it for gradient accumulation

    def __init__(self, config: CorrDistillConfig):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError(
                "CorrDistillForCTC needs config.vocab_size (the tokenizer's length), e.g. "
                "`CorrDistillForCTC.from_pretrained(student, vocab_size=len(tokenizer), pad_token_id=...)`"
            )
        self.corrdistill = CorrDistillModel(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutput | tuple:
        """
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz waveforms, zero-padded.
            attention_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*):
                1 for real samples; it also sets each utterance's number of CTC frames.
            labels (`torch.LongTensor` of shape `(batch, target_length)`, *optional*):
                Token ids in `[0, config.vocab_size)`, right-padded with -100 (or `config.pad_token_id`); the
                padding is dropped before the loss.
            output_hidden_states (`bool`, *optional*): Return the backbone's `hidden_states`.

        Returns:
            [`CausalLMOutput`] with `logits` of shape `(batch, frames, vocab_size)` and, given `labels`, the CTC
            `loss` reduced by `config.ctc_loss_reduction`.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if labels is not None and labels.max() >= self.config.vocab_size:
            raise ValueError(f"label ids must be < vocab_size ({self.config.vocab_size}), got {labels.max().item()}")
        outputs = self.corrdistill(
            input_values, attention_mask, output_hidden_states=output_hidden_states, return_dict=True
        )
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))  # (B, F, V)

        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            frame_lengths = self._get_feat_extract_output_lengths(attention_mask.long().sum(-1))  # (B,)
            loss = self._ctc_loss(logits, labels.to(logits.device), frame_lengths)
        output = CausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()

    def _ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """CTC of `logits` (B, F, V) against `labels` (B, U) over the first `frame_lengths` (B,) frames."""
        blank = self.config.pad_token_id
        is_target = (labels >= 0) & (labels != blank)  # (B, U): -100 and blank padding dropped
        targets = labels.masked_select(is_target)  # (sum of target lengths,), concatenated
        # log-probabilities in at least float32 (`ctc_loss` has no half-precision kernel)
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC kernel has restrictions that vary by version
            return F.ctc_loss(
                log_probs.transpose(0, 1),  # (F, B, V)
                targets,
                frame_lengths,
                is_target.sum(-1),
                blank=blank,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )


__all__ = [
    "CorrDistillForCTC",
    "CorrDistillForPreTraining",
    "CorrDistillForPreTrainingOutput",
    "CorrDistillForSequenceClassification",
    "CorrDistillModel",
    "CorrDistillModelOutput",
    "CorrDistillPreTrainedModel",
    "compute_span_mask",
]
