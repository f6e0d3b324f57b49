"""backbones.py — the pretrained source model θ^S_0 = {θ^S_e0, θ^S_f0, θ^S_h0} behind one small interface.

Paper: "Learning Modality Knowledge Alignment for Cross-Modality Transfer" (MoNA), ICML 2024, arXiv 2406.18864.
  §2.1      g_θ = h(f(e(x; θ_e); θ_f); θ_h); pretrained source weights θ^S_0 = {θ^S_e0, θ^S_f0, θ^S_h0};
            the target encoder θ_f^T starts from θ^S_f0.
  App. A.2  the bodies: ImageNet-22k Swin-Base for 2D tasks (tokens of width 128 at patch 4 and 224 px,
            7×7 output features of width 1024) and RoBERTa-base for 1D tasks (width 768).
  §2.3/A.4  the source head θ^S_h0 gives the source logits z^s of the knowledge-discrepancy analysis.

Paper map (B batch, N tokens in, N' tokens out, P prefix tokens, D token width, d feature width, m mask):
| paper              | code                          | shape                                                         |
|--------------------|-------------------------------|---------------------------------------------------------------|
| θ^S_e0, e^S(x)     | SourceModel.source_embedder   | 2D (B, 3, H, W) float -> (B, N, D); 1D (B, T) long -> (B, T, D) |
| θ^S_f0 = θ_f, f    | SourceModel.encoder           | (B, N, D), m -> (B, N', d), final norm; return_prefix (B, P+N', d) |
| pooled feature     | SourceModel.readout           | encoder(t, m, return_prefix=True), m -> (B, d) (Readout below) |
| θ^S_h0, h^S        | SourceModel.source_head       | encoder(t, m, return_prefix=True) -> (B, K_s); 1D (B, T, V)   |
| z^s = h^S(f(e^S))  | SourceModel.forward           | raw source input -> source logits (== the library's forward)  |
| h^S(f(tokens))     | SourceModel.logits_from_tokens| tokens of any embedder, m -> source logits (discrepancy, A.4) |
| f(e^S(x))          | SourceModel.source_features   | (B, N', d); pooled_features: its readout (B, d)               |
| mean over tokens   | masked_mean                   | (B, T, D), m (B, T) -> (B, D), real tokens only               |

Attention mask m (B, T): 1 = real token, 0 = pad (the CoNLL-2003 surrogate is padded to a fixed length). BERT-family
bodies honour it through transformers' own mask (create_bidirectional_mask: the additive mask of eager attention,
so no token attends to a pad) and the readout averages the real tokens only, so with right padding a real token's
feature does not depend on the padded length. Swin/ViT/CLIP have no padding: they accept None or all ones and raise
BackboneError for a mask with zeros. The mask is an input, not a parameter: functional_call swaps θ_f around it and
double backward treats it as data.

Readout: the ONE pooled feature used by the classification head h_c (predictors.py), MoNA's outer-loss features
(Eq. 4), the probe of §2.2 and ORCA's 1D features when they go through the body. Each body is read out as its
pretraining read it: Swin (no class token) and BERT-family by the (masked) mean of the final-norm tokens, App.
A.2's average pooling; ViT/CLIP by the final-norm class token (timm's global_pool="token" for both tags we use,
fc_norm the Identity; a folder ViT with another timm pool gets the mean of its patch tokens).
DEVIATION from App. A.2 (average pooling): ViT/CLIP read the class token, because these checkpoints were pretrained
and are read out through it (ImageNet-21k classifier, CLIP image projection); App. A.2's average pooling describes
Swin-B, the paper's 2D body, which has no class token. Dense heads keep the patch tokens (return_prefix=False).

| key            | library: hub id                                            | D -> d      | N -> N' at 224 px |
|----------------|------------------------------------------------------------|-------------|-------------------|
| "swin_base"    | timm: swin_base_patch4_window7_224.ms_in22k (2D body)      | 128 -> 1024 | 56² -> 7²         |
| "vit_base"     | timm: vit_base_patch16_224.augreg_in21k                    | 768 -> 768  | 14² -> 14²        |
| "clip_vit_b16" | timm: vit_base_patch16_clip_quickgelu_224.openai           | 768 -> 768  | 14² -> 14²        |
| "roberta_base" | transformers: roberta-base as RobertaForMaskedLM (1D body) | 768 -> 768  | T -> T, T ≤ 512   |
| a folder path  | save_backbone output, a timm hub-style folder, or any Hugging Face BERT-family save_pretrained |

DEVIATION from ORCA (which the paper follows, App. A.2): Swin-B comes from timm, not Hugging Face's
SwinForImageClassification, because timm ships the same ImageNet-22k weights with the classifier and runs the
same computation; parameter names differ, so checkpoints do not load across the two.

Double backward (stage 1 differentiates through θ_f* = θ_f − α∇_θf L_in): fused SDPA kernels have no double
backward (pitfall 2 in meta.py's docstring; pytorch/pytorch issue 116350), so every timm attention module gets
`fused_attn = False` and Hugging Face models use `attn_implementation="eager"`. The wrappers hold the library's
own submodules and parameter tensors and nothing else, and never call methods of the unwrapped model, so
`torch.func.functional_call(source.encoder, params, (tokens,))` swaps every θ_f tensor (ViT's cls token and
absolute positions included).

Regularisation as ORCA (its configs set `drop_out: 0`, which `src/embedder.py` copies into hidden_dropout_prob and
attention_probs_dropout_prob): hidden and attention dropout 0 by default (`dropout=0.0`; roberta-base's own config
says 0.1), Swin-B's stochastic depth left at timm's (and Hugging Face's) default 0.1, which ORCA never turns off.

Weights come from support/backbone_loading.py (hub or its cache, a local file or folder); pretrained=False gives the
library's own random init of the same architecture there, for folders and weights= too (Train-from-scratch).
`tiny=True` builds the same classes small and randomly initialised (Swin: embed 32, depths (1, 1, 2, 1), 64 px,
window 2; ViT/CLIP: width 64, depth 2, 64 px; RoBERTa: width 64, 2 layers, vocabulary 1000, 128 tokens).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from support.backbone_loading import META_FILE, BackboneError, load_library_model

__all__ = ["BackboneError", "BackboneSpec", "BACKBONES", "DEFAULT_BACKBONE", "Readout", "SourceModel", "build_backbone", "masked_mean",
           "save_backbone"]

# ---------------------------------------------------------------------------------------------------------------
# Registry (data, not branches)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    name: str          # key of BACKBONES
    library: str       # "timm" | "transformers"
    modality: str      # "2d" | "1d"
    hub_id: str        # timm "<architecture>.<tag>" or transformers repo id
    hub_repo: str      # Hugging Face Hub repository holding the weights
    config: dict = field(default_factory=dict)  # full-size build kwargs (timm create_model / transformers config)
    tiny: dict = field(default_factory=dict)    # tiny-variant build kwargs (random init, CPU tests)
    note: str = ""


_TINY_VIT = dict(embed_dim=64, depth=2, num_heads=2, img_size=64, patch_size=16)
# roberta-base's config.json values, so pretrained=False (or weights=<file>) builds the real architecture offline
_ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                     layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)

BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in [
    BackboneSpec("swin_base", "timm", "2d", "swin_base_patch4_window7_224.ms_in22k",
                 "timm/swin_base_patch4_window7_224.ms_in22k",
                 tiny=dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), img_size=64,
                           window_size=2, num_classes=100),
                 note="paper's 2D body; ImageNet-22k head (21841 classes)"),
    BackboneSpec("vit_base", "timm", "2d", "vit_base_patch16_224.augreg_in21k",
                 "timm/vit_base_patch16_224.augreg_in21k",
                 tiny=dict(_TINY_VIT, num_classes=100), note="ImageNet-21k head (21843 classes), cls-token pool"),
    BackboneSpec("clip_vit_b16", "timm", "2d", "vit_base_patch16_clip_quickgelu_224.openai",
                 "timm/vit_base_patch16_clip_224.openai",
                 tiny=dict(_TINY_VIT, num_classes=32),
                 note="no classifier: source_head is CLIP's image projection (512-d image embedding, not logits)"),
    BackboneSpec("roberta_base", "transformers", "1d", "roberta-base", "roberta-base",
                 config=dict(_ROBERTA_BASE),
                 tiny=dict(_ROBERTA_BASE, vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=128, max_position_embeddings=130),
                 note="paper's 1D body; source head = MLM vocabulary logits"),
]}
DEFAULT_BACKBONE = {"2d": "swin_base", "1d": "roberta_base"}   # §4: Swin-B for 2D tasks, RoBERTa-base for 1D

# ---------------------------------------------------------------------------------------------------------------
# Attention masks and the readout (parameter-free: inputs, never part of θ_f)
# ---------------------------------------------------------------------------------------------------------------


def _check_mask(attention_mask: torch.Tensor | None, who: str, padding: bool, shape=None) -> None:
    """attention_mask must be None or (B, T) = `shape` (the input tokens'); without `padding` support, all ones."""
    if attention_mask is None:
        return
    if shape is not None and tuple(attention_mask.shape) != tuple(shape):
        raise BackboneError(f"{who}: attention_mask must be (B, T) = {tuple(shape)} like the input tokens, got "
                            f"{tuple(attention_mask.shape)}")
    if not padding and not bool(attention_mask.all()):
        raise BackboneError(f"{who} has no padding (every token is attended to and pooled): pass "
                            f"attention_mask=None or all ones, not a mask with zeros")


def masked_mean(x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) tokens, (B, T) mask (1 = real token, 0 = pad) -> (B, D): the mean over the real tokens.

    None = x.mean(1) exactly (bit-identical to the plain mean). A row without real tokens gives 0. Pads are
    filled with 0 before the sum, so a non-finite pad feature cannot leak in. Twice differentiable in x."""
    if attention_mask is None:
        return x.mean(dim=1)                                               # (B, D)
    if tuple(attention_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"masked_mean: attention_mask {tuple(attention_mask.shape)} does not match tokens "
                         f"{tuple(x.shape[:2])} (B, T)")
    real = attention_mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1)   # (B, T, 1)
    count = real.sum(dim=1).clamp_min(1).to(x.dtype)                           # (B, 1)  Σ_t m_t, at least 1
    # x̄ = Σ_t m_t x_t / Σ_t m_t
    return x.masked_fill(~real, 0).sum(dim=1) / count                          # (B, D)


class Readout(nn.Module):
    """The body's pooled feature (B, d) from `encoder(tokens, attention_mask, return_prefix=True)`; no parameters.

    pool "mean": (masked) mean over the non-prefix tokens (Swin, BERT-family, ViTs pooled by average);
    pool "token": the final-norm class token, feats[:, 0] (ViT/CLIP). `num_tokens` (ViT/CLIP: P + N) catches
    features passed without their prefix. `padding`: the body honours a mask with zeros (BERT-family)."""

    def __init__(self, pool: str, *, num_prefix_tokens: int = 0, num_tokens: int | None = None,
                 padding: bool = False, who: str = "body"):
        super().__init__()
        assert pool in ("mean", "token"), pool
        self.pool, self.num_prefix_tokens, self.num_tokens = pool, int(num_prefix_tokens), num_tokens
        self.padding, self.who = padding, who

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, num_prefix_tokens={self.num_prefix_tokens}"

    def forward(self, feats: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_tokens is not None and feats.shape[1] != self.num_tokens:
            raise BackboneError(f"{self.who} readout expects encoder(tokens, return_prefix=True) output with "
                                f"{self.num_tokens} tokens ({self.num_prefix_tokens} prefix), got {feats.shape[1]}")
        if not self.padding:                       # a 2D body: N' ≠ N (Swin), so the mask is only checked
            _check_mask(attention_mask, self.who, padding=False)
            attention_mask = None
        if self.pool == "token":
            # DEVIATION from App. A.2 (average pooling): ViT/CLIP are read out by their final-norm class token, as
            # their pretraining (ImageNet-21k classifier, CLIP projection) read them; Swin has no class token.
            return feats[:, 0]                                             # (B, d)  x_cls
        # App. A.2: z̄ = mean over the N' (real) tokens
        return masked_mean(feats[:, self.num_prefix_tokens:], attention_mask)   # (B, d)

# ---------------------------------------------------------------------------------------------------------------
# Wrappers: the library model split into e (embedder), f (encoder), h (head), sharing its parameter tensors
# ---------------------------------------------------------------------------------------------------------------


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear (torchvision Resize on tensors, antialias on); no-op at size."""
    if x.dim() != 4:
        raise ValueError(f"2D source embedder expects images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _SwinEmbedder(nn.Module):
    """θ^S_e0 of Swin: resize -> Conv p×p (stride p) -> LayerNorm; timm's NHWC tokens flattened to NLC."""

    def __init__(self, patch_embed: nn.Module, image_size: int):
        super().__init__()
        self.patch_embed, self.image_size = patch_embed, image_size

    def forward(self, x):                                   # x: (B, 3, H, W)
        t = self.patch_embed(_resize(x, self.image_size))   # (B, H', W', D)   timm Swin is NHWC
        return t.flatten(1, 2)                              # (B, N = H'·W', D)


class _SwinEncoder(nn.Module):
    """θ_f of Swin: NLC tokens -> the configured grid (NHWC) -> stages -> final LayerNorm -> NLC features."""

    def __init__(self, layers: nn.Module, norm: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.layers, self.norm, self.grid = layers, norm, tuple(grid)

    def forward(self, tokens, attention_mask=None, return_prefix: bool = False):   # tokens: (B, N, D); no prefix
        B, N, D = tokens.shape
        _check_mask(attention_mask, "Swin", padding=False, shape=(B, N))
        H, W = self.grid
        if N != H * W:
            raise ValueError(f"Swin encoder expects N = {H}x{W} = {H * W} tokens (shift masks are precomputed "
                             f"for that grid), got {N}")
        f = self.norm(self.layers(tokens.reshape(B, H, W, D)))   # (B, h, w, d)
        return f.flatten(1, 2)                                    # (B, N' = h·w, d)


class _SwinHead(nn.Module):
    """θ^S_h0 of Swin: timm's ClassifierHead (average pool over the h×w grid -> Linear(d, K_s))."""

    def __init__(self, head: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.head, self.grid = head, tuple(grid)

    def forward(self, f):                                   # f: (B, N', d)
        # z^s = W_h · mean_{h,w} f + b_h
        return self.head(f.reshape(f.shape[0], *self.grid, f.shape[-1]))   # (B, h, w, d) -> (B, K_s)


class _ViTEmbedder(nn.Module):
    """θ^S_e0 of ViT/CLIP: resize -> Conv p×p (stride p) -> flatten: (B, N, D), no positions (those are in θ_f)."""

    def __init__(self, patch_embed: nn.Module, image_size: int):
        super().__init__()
        self.patch_embed, self.image_size = patch_embed, image_size

    def forward(self, x):                                   # x: (B, 3, H, W)
        return self.patch_embed(_resize(x, self.image_size))   # (B, N, D)


class _ViTEncoder(nn.Module):
    """θ_f of ViT/CLIP: prefix (cls/register) tokens + absolute positions, norm_pre, blocks, final norm.

    Re-implements timm's `VisionTransformer._pos_embed` on this module's own attributes (not by calling the
    library model) so that functional_call swaps cls_token / pos_embed too.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.cls_token, self.reg_token, self.pos_embed = vit.cls_token, vit.reg_token, vit.pos_embed
        self.pos_drop, self.patch_drop, self.norm_pre = vit.pos_drop, vit.patch_drop, vit.norm_pre
        self.blocks, self.norm = vit.blocks, vit.norm
        self.no_embed_class, self.num_prefix_tokens = vit.no_embed_class, vit.num_prefix_tokens

    def forward(self, tokens, attention_mask=None, return_prefix: bool = False):   # tokens: (B, N, D)
        B = tokens.shape[0]
        _check_mask(attention_mask, "ViT/CLIP", padding=False, shape=tokens.shape[:2])
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]  # (B, 1, D) each
        x = tokens
        # x_0 = [x_cls; x_reg; E·patches] + E_pos   (timm's _pos_embed; E_pos, x_cls ∈ θ_f here)
        if self.pos_embed is not None:
            if self.no_embed_class:
                x = torch.cat(prefix + [x + self.pos_embed], dim=1)   # positions on patches only (DeiT-3 style)
            else:
                x = torch.cat(prefix + [x], dim=1) + self.pos_embed   # (B, P + N, D) positions on prefix too
        else:
            x = torch.cat(prefix + [x], dim=1)
        x = self.norm_pre(self.patch_drop(self.pos_drop(x)))     # CLIP: LayerNorm (pre_norm); ViT: Identity
        x = self.norm(self.blocks(x))                             # (B, P + N, d)
        return x if return_prefix else x[:, self.num_prefix_tokens:]   # (B, N' = N, d) patch tokens


class _ViTHead(nn.Module):
    """θ^S_h0 of ViT/CLIP: timm's pool (cls token for these checkpoints) -> fc_norm -> head."""

    def __init__(self, vit: nn.Module):
        from timm.layers import global_pool_nlc
        super().__init__()
        self.attn_pool, self.fc_norm, self.head_drop, self.head = vit.attn_pool, vit.fc_norm, vit.head_drop, vit.head
        self.global_pool, self.num_prefix_tokens = vit.global_pool, vit.num_prefix_tokens
        self.pool_include_prefix, self._pool_nlc = vit.pool_include_prefix, global_pool_nlc

    def forward(self, x):                                   # x: (B, P + N, d), encoder(.., return_prefix=True)
        if self.attn_pool is not None:
            x = self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens:])
        else:   # "token": x[:, 0] (cls); "avg": mean over patch tokens
            x = self._pool_nlc(x, pool_type=self.global_pool, num_prefix_tokens=self.num_prefix_tokens,
                               reduce_include_prefix=self.pool_include_prefix)   # (B, d)
        # z^s = W_h · fc_norm(pooled) + b_h
        return self.head(self.head_drop(self.fc_norm(x)))   # (B, K_s)


class _HFEmbedder(nn.Module):
    """θ^S_e0 of a BERT-family model: word + position (+ token-type) embeddings -> LayerNorm (-> dropout)."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, input_ids):                           # input_ids: (B, T) long
        if input_ids.dim() != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"1D source embedder expects input_ids (B, T) long, got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}")
        return self.embeddings(input_ids=input_ids)         # (B, T, D)


class _HFEncoder(nn.Module):
    """θ_f of a BERT-family model: (optional ELECTRA embeddings_project) + the transformer layers.

    attention_mask (B, T), 1 = real, 0 = pad, becomes the model's own mask as its forward builds it
    (transformers' create_bidirectional_mask with the config's eager attention: (B, 1, T, T) additive, dtype min at
    pads; None when the mask is all ones), so no token attends to a pad. `config` is a plain attribute (no tensors).
    """

    def __init__(self, encoder: nn.Module, config, project: nn.Module | None = None):
        super().__init__()
        self.encoder, self.project, self.config = encoder, project, config

    def forward(self, tokens, attention_mask=None, return_prefix: bool = False):   # tokens: (B, T, D); no prefix
        x = self.project(tokens) if self.project is not None else tokens
        _check_mask(attention_mask, "BERT-family encoder", padding=True, shape=tokens.shape[:2])
        if attention_mask is not None:
            from transformers.masking_utils import create_bidirectional_mask
            # score_ij + (0 if m_j = 1 else min): softmax weight 0 on pads (BertModel.forward's own mask)
            attention_mask = create_bidirectional_mask(config=self.config, inputs_embeds=x,
                                                       attention_mask=attention_mask)
        out = self.encoder(x, attention_mask=attention_mask)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state   # (B, T, d)

# ---------------------------------------------------------------------------------------------------------------
# The source model
# ---------------------------------------------------------------------------------------------------------------


class SourceModel(nn.Module):
    """θ^S_0 = {θ^S_e0: source_embedder, θ^S_f0: encoder, θ^S_h0: source_head} of one pretrained body.

    The three parts share their parameter tensors with the unwrapped library model (`library_model`, not a
    registered submodule, so state_dict has no duplicates); `forward` reproduces the library's own forward.
    source_head and readout consume `encoder(tokens, attention_mask, return_prefix=True)` (ViT/CLIP need the cls
    token; for Swin and BERT-family this equals `encoder(tokens, attention_mask)`). `feature_pool` is the
    parameter-free Readout behind `readout` (predictors.py hands the same module to the classification head).
    """

    def __init__(self, *, name: str, modality: str, family: str, library_model: nn.Module,
                 source_embedder: nn.Module, encoder: nn.Module, source_head: nn.Module | None,
                 embed_dim: int, feature_dim: int, num_source_classes: int | None,
                 image_size: int | None = None, patch_size: int | None = None, output_stride: int | None = None,
                 max_tokens: int | None = None, position_offset: int | None = None,
                 hub_id: str | None = None, tiny: bool = False, feature_pool: Readout | None = None):
        super().__init__()
        assert modality in ("2d", "1d"), modality
        self.name, self.modality, self.family, self.hub_id, self.tiny = name, modality, family, hub_id, tiny
        self.source_embedder, self.encoder, self.source_head = source_embedder, encoder, source_head
        self.embed_dim, self.feature_dim, self.num_source_classes = embed_dim, feature_dim, num_source_classes
        self.image_size, self.patch_size, self.output_stride = image_size, patch_size, output_stride
        self.max_tokens, self.position_offset = max_tokens, position_offset
        self.feature_pool = feature_pool or Readout("mean", padding=modality == "1d", who=name)
        object.__setattr__(self, "_library_model", library_model)   # shared tensors, deliberately unregistered

    @property
    def library_model(self) -> nn.Module:
        """The unwrapped timm / transformers model (same parameter tensors); used by save_backbone and tests."""
        return self._library_model

    def train(self, mode: bool = True):
        super().train(mode)
        self._library_model.train(mode)
        return self

    def readout(self, feats: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The body's pooled feature (B, d) of feats = encoder(tokens, attention_mask, return_prefix=True): masked
        mean over real tokens (Swin, BERT-family), final-norm class token (ViT/CLIP); see the module docstring."""
        return self.feature_pool(feats, attention_mask)

    def logits_from_tokens(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z^s = h^S(f(tokens)): tokens (B, N, D) from any embedder (source or target) -> source logits; 1D per
        token (B, T, V) (pool them with masked_mean(z, attention_mask))."""
        if self.source_head is None:
            raise BackboneError(f"backbone '{self.name}' has no source head (checkpoint without a classifier/MLM "
                                f"head); only source_features() is available")
        return self.source_head(self.encoder(tokens, attention_mask, return_prefix=True))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """g_{θ^S_0}(x) = h^S(f(e^S(x))): source logits (B, K_s), or (B, T, V) MLM logits for 1D."""
        return self.logits_from_tokens(self.source_embedder(x), attention_mask)

    def source_features(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """f(e^S(x)): (B, N', d) features of raw source inputs (after the body's final norm; no prefix)."""
        return self.encoder(self.source_embedder(x), attention_mask)

    def pooled_features(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """readout(f(e^S(x))): (B, d), the pooled source feature (probe, MoNA's outer loss, ORCA's 1D features)."""
        return self.readout(self.encoder(self.source_embedder(x), attention_mask, return_prefix=True), attention_mask)

    def source_position_table(self) -> torch.Tensor | None:
        """1D: (max_tokens, D) copy of the source position embeddings, row 0 = first real token position
        (RoBERTa skips padding_idx + 1 = 2 rows, BERT starts at 0). None for 2D (Swin has none; ViT's are in θ_f)."""
        if self.modality != "1d":
            return None
        w = self.source_embedder.embeddings.position_embeddings.weight       # (max_positions, D)
        return w[self.position_offset:self.position_offset + self.max_tokens].detach().clone()


def _wrap_timm(lib: nn.Module, name: str, hub_id: str | None, tiny: bool) -> SourceModel:
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer
    for m in lib.modules():                 # no fused SDPA: it has no double backward
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    pe = lib.patch_embed
    image_size, patch_size = pe.img_size[0], pe.patch_size[0]
    if pe.img_size[0] != pe.img_size[1] or not getattr(pe, "strict_img_size", True):
        raise BackboneError(f"timm model for '{name}' must have a fixed square input size, got {pe.img_size}")
    stride = lib.feature_info[-1]["reduction"]                  # input pixels per output-token side
    out_grid = (image_size // stride, image_size // stride)
    head_out = getattr(lib, "num_classes", 0) or None
    common = dict(name=name, modality="2d", library_model=lib, embed_dim=pe.proj.out_channels,
                  feature_dim=lib.num_features, num_source_classes=head_out, image_size=image_size,
                  patch_size=patch_size, output_stride=stride, hub_id=hub_id, tiny=tiny)
    if isinstance(lib, SwinTransformer):
        return SourceModel(family="swin", source_embedder=_SwinEmbedder(pe, image_size),
                           encoder=_SwinEncoder(lib.layers, lib.norm, pe.grid_size),
                           source_head=_SwinHead(lib.head, out_grid) if head_out else None,
                           feature_pool=Readout("mean", who="Swin"), **common)
    if isinstance(lib, VisionTransformer):
        if getattr(lib, "dynamic_img_size", False) or not getattr(pe, "flatten", True):
            raise BackboneError(f"timm ViT for '{name}' must be built without dynamic_img_size")
        # the checkpoint's own readout: timm's global_pool ("token" for the in21k ViT-B and CLIP tags)
        P, N = lib.num_prefix_tokens, pe.num_patches
        pool = Readout("token" if lib.global_pool == "token" and P > 0 else "mean", num_prefix_tokens=P,
                       num_tokens=P + N, who="ViT/CLIP")
        return SourceModel(family="vit", source_embedder=_ViTEmbedder(pe, image_size), encoder=_ViTEncoder(lib),
                           source_head=_ViTHead(lib) if head_out else None, feature_pool=pool, **common)
    raise BackboneError(f"unsupported timm architecture {type(lib).__name__} for '{name}'; supported: "
                        f"SwinTransformer, VisionTransformer")


def _wrap_hf(lib: nn.Module, name: str, hub_id: str | None, tiny: bool) -> SourceModel:
    if getattr(lib.config, "_attn_implementation", "eager") != "eager":
        lib.set_attn_implementation("eager")      # sdpa/flash kernels have no double backward
    base = lib.base_model
    body = getattr(base, "encoder", None)
    if getattr(base, "embeddings", None) is None or body is None:
        raise BackboneError(f"'{name}': {type(base).__name__} has no .embeddings/.encoder split; supported are "
                            f"BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT)")
    emb = base.embeddings
    # the MLM head is the one child beside the base model (RoBERTa lm_head, BERT cls, ALBERT predictions)
    heads = [m for n, m in lib.named_children() if m is not base and any(True for _ in m.parameters())]
    head = heads[0] if lib is not base and len(heads) == 1 else None
    # RoBERTa-style position ids start at padding_idx + 1 (create_position_ids_from_input_ids); BERT's at 0
    offset = emb.padding_idx + 1 if hasattr(emb, "create_position_ids_from_input_ids") else 0
    cfg = lib.config
    embed_dim = emb.word_embeddings.embedding_dim if hasattr(emb, "word_embeddings") else cfg.hidden_size
    project = getattr(base, "embeddings_project", None)      # ELECTRA: embedding_size -> hidden_size, part of θ_f
    return SourceModel(name=name, modality="1d", family="hf", library_model=lib,
                       source_embedder=_HFEmbedder(emb), encoder=_HFEncoder(body, cfg, project),
                       source_head=head, embed_dim=embed_dim, feature_dim=cfg.hidden_size,
                       num_source_classes=cfg.vocab_size if head is not None else None,
                       max_tokens=cfg.max_position_embeddings - offset, position_offset=offset,
                       hub_id=hub_id, tiny=tiny, feature_pool=Readout("mean", padding=True, who=name))


# ---------------------------------------------------------------------------------------------------------------
# Building (tensors from support/backbone_loading.py) and saving
# ---------------------------------------------------------------------------------------------------------------


def build_backbone(name_or_path: str, *, tiny: bool = False, pretrained: bool = True, weights: str | None = None,
                   drop_path_rate: float | None = None, dropout: float | None = 0.0,
                   tiny_kwargs: dict | None = None) -> SourceModel:
    """Build θ^S_0 as a SourceModel (the tensors come from backbone_loading.load_library_model).

    name_or_path: a key of BACKBONES, or a local folder (a save_backbone folder, a timm hub-style folder with
        config.json + model.safetensors, or any Hugging Face BERT-family folder from save_pretrained).
    tiny: small random-init variant of the same classes (no published weights: without `weights` it is random).
    pretrained: True loads the weights (hub, `weights`, or the folder); False = a randomly initialised body of the
        same architecture (Table 2, Train-from-scratch) for every source, folders and `weights` included: the
        architecture is read from the folder's / weights folder's config (else the BACKBONES spec), never its tensors.
    weights: a local weights file or folder for a BACKBONES name (overrides the hub).
    drop_path_rate: timm stochastic depth (None = timm default, Swin-B 0.1 as in ORCA); BERT-family has none.
    dropout: hidden and attention dropout of the body (HF hidden_dropout_prob / attention_probs_dropout_prob; timm
        proj_drop_rate / attn_drop_rate). Default 0.0, ORCA's `drop_out` in every config (configs/*.yaml);
        None keeps the library / checkpoint default (roberta-base: 0.1).
    tiny_kwargs: with tiny, build kwargs that replace the spec's tiny ones (support/demo.py: a 32-px tiny Swin).
    Raises BackboneError (one line) for unknown names, missing files and unreachable weights.
    """
    registry = BACKBONES
    if tiny and tiny_kwargs and name_or_path in BACKBONES:
        spec = BACKBONES[name_or_path]
        registry = {**BACKBONES, spec.name: dataclasses.replace(spec, tiny={**spec.tiny, **tiny_kwargs})}
    lib, library, name, hub_id, is_tiny = load_library_model(
        name_or_path, registry, tiny=tiny, pretrained=pretrained, weights=weights, drop_path_rate=drop_path_rate,
        dropout=dropout)
    return (_wrap_timm if library == "timm" else _wrap_hf)(lib, name, hub_id, is_tiny)


def save_backbone(source: SourceModel, folder: str | os.PathLike) -> Path:
    """Write `folder` so that build_backbone(folder) rebuilds the same θ^S_0: the library's own format
    (timm: config.json + model.safetensors via timm's save_for_hf, loadable as timm 'local-dir:'; transformers:
    save_pretrained) plus mona_backbone.json (name, tiny, hub id)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lib = source.library_model
    if source.family in ("swin", "vit"):
        from timm.models import save_for_hf
        save_for_hf(lib, folder, safe_serialization=True)
    else:
        lib.save_pretrained(folder)
    meta = dict(format="mona-backbone-v1", name=source.name, family=source.family, tiny=source.tiny,
                hub_id=source.hub_id)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return folder
