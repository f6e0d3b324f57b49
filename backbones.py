"""backbones.py — the pretrained source model θ^S_0 = {θ^S_e0, θ^S_f0, θ^S_h0} behind one small interface.

Paper: "Learning Modality Knowledge Alignment for Cross-Modality Transfer" (MoNA), ICML 2024, arXiv 2406.18864.
  §2.1      g_θ = h(f(e(x; θ_e); θ_f); θ_h); pretrained source weights θ^S_0 = {θ^S_e0, θ^S_f0, θ^S_h0};
            the target encoder θ_f^T starts from θ^S_f0.
  App. A.2  the bodies: ImageNet-22k Swin-Base for 2D tasks (tokens of width 128 at patch 4 and 224 px,
            7×7 output features of width 1024) and RoBERTa-base for 1D tasks (width 768).
  §2.3/A.4  the source head θ^S_h0 gives the source logits z^s of the knowledge-discrepancy analysis.

Paper map (B batch, N tokens in, N' tokens out, P prefix tokens, D token width, d feature width):
| paper              | code                          | shape                                                         |
|--------------------|-------------------------------|---------------------------------------------------------------|
| θ^S_e0, e^S(x)     | SourceModel.source_embedder   | 2D (B, 3, H, W) float -> (B, N, D); 1D (B, T) long -> (B, T, D) |
| θ^S_f0 = θ_f, f    | SourceModel.encoder           | (B, N, D) -> (B, N', d), final norm; return_prefix (B, P+N', d) |
| θ^S_h0, h^S        | SourceModel.source_head       | encoder(t, return_prefix=True) -> (B, K_s); 1D (B, T, V)      |
| z^s = h^S(f(e^S))  | SourceModel.forward           | raw source input -> source logits (== the library's forward)  |
| h^S(f(tokens))     | SourceModel.logits_from_tokens| tokens of any embedder -> source logits (discrepancy, A.4)    |
| f(e^S(x))          | SourceModel.source_features   | (B, N', d)                                                    |

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

Weights: hub downloads need a network. When HF_HUB_OFFLINE=1 (read at call time) or the hub is unreachable
(one 3 s TCP probe) only the local cache is tried and a miss raises BackboneError at once, instead of
huggingface_hub's ~25 s of retries per file. Pass `weights=` (a file or folder) or a saved folder instead.
`tiny=True` builds the same classes small and randomly initialised (Swin: embed 32, depths (1, 1, 2, 1), 64 px,
window 2; ViT/CLIP: width 64, depth 2, 64 px; RoBERTa: width 64, 2 layers, vocabulary 1000, 128 tokens).
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BackboneError", "BackboneSpec", "BACKBONES", "SourceModel", "build_backbone", "save_backbone"]

# ---------------------------------------------------------------------------------------------------------------
# Registry (data, not branches)
# ---------------------------------------------------------------------------------------------------------------


class BackboneError(RuntimeError):
    """A backbone cannot be built or loaded; the message is one line naming what was expected and how to fix it."""


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

_META_FILE = "mona_backbone.json"  # written by save_backbone next to the library's own files

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

    def forward(self, tokens, return_prefix: bool = False):   # tokens: (B, N, D); Swin has no prefix tokens
        B, N, D = tokens.shape
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

    def forward(self, tokens, return_prefix: bool = False):   # tokens: (B, N, D)
        B = tokens.shape[0]
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
    """θ_f of a BERT-family model: (optional ELECTRA embeddings_project) + the transformer layers."""

    def __init__(self, encoder: nn.Module, project: nn.Module | None = None):
        super().__init__()
        self.encoder, self.project = encoder, project

    def forward(self, tokens, return_prefix: bool = False):   # tokens: (B, T, D); no prefix tokens in 1D
        x = self.project(tokens) if self.project is not None else tokens
        # all-ones attention mask (our tokens have no padding): transformers' create_bidirectional_mask returns
        # None for it, so None is passed directly.
        out = self.encoder(x, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state   # (B, T, d)

# ---------------------------------------------------------------------------------------------------------------
# The source model
# ---------------------------------------------------------------------------------------------------------------


class SourceModel(nn.Module):
    """θ^S_0 = {θ^S_e0: source_embedder, θ^S_f0: encoder, θ^S_h0: source_head} of one pretrained body.

    The three parts share their parameter tensors with the unwrapped library model (`library_model`, not a
    registered submodule, so state_dict has no duplicates); `forward` reproduces the library's own forward.
    source_head consumes `encoder(tokens, return_prefix=True)` (ViT/CLIP need the cls token; for Swin and
    BERT-family this equals `encoder(tokens)`).
    """

    def __init__(self, *, name: str, modality: str, family: str, library_model: nn.Module,
                 source_embedder: nn.Module, encoder: nn.Module, source_head: nn.Module | None,
                 embed_dim: int, feature_dim: int, num_source_classes: int | None,
                 image_size: int | None = None, patch_size: int | None = None, output_stride: int | None = None,
                 max_tokens: int | None = None, position_offset: int | None = None,
                 hub_id: str | None = None, tiny: bool = False):
        super().__init__()
        assert modality in ("2d", "1d"), modality
        self.name, self.modality, self.family, self.hub_id, self.tiny = name, modality, family, hub_id, tiny
        self.source_embedder, self.encoder, self.source_head = source_embedder, encoder, source_head
        self.embed_dim, self.feature_dim, self.num_source_classes = embed_dim, feature_dim, num_source_classes
        self.image_size, self.patch_size, self.output_stride = image_size, patch_size, output_stride
        self.max_tokens, self.position_offset = max_tokens, position_offset
        object.__setattr__(self, "_library_model", library_model)   # shared tensors, deliberately unregistered

    @property
    def library_model(self) -> nn.Module:
        """The unwrapped timm / transformers model (same parameter tensors); used by save_backbone and tests."""
        return self._library_model

    def train(self, mode: bool = True):
        super().train(mode)
        self._library_model.train(mode)
        return self

    def logits_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """z^s = h^S(f(tokens)): tokens (B, N, D) from any embedder (source or target) -> source logits."""
        if self.source_head is None:
            raise BackboneError(f"backbone '{self.name}' has no source head (checkpoint without a classifier/MLM "
                                f"head); only source_features() is available")
        return self.source_head(self.encoder(tokens, return_prefix=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """g_{θ^S_0}(x) = h^S(f(e^S(x))): source logits (B, K_s), or (B, T, V) MLM logits for 1D."""
        return self.logits_from_tokens(self.source_embedder(x))

    def source_features(self, x: torch.Tensor) -> torch.Tensor:
        """f(e^S(x)): (B, N', d) features of raw source inputs (after the body's final norm)."""
        return self.encoder(self.source_embedder(x))

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
                           source_head=_SwinHead(lib.head, out_grid) if head_out else None, **common)
    if isinstance(lib, VisionTransformer):
        if getattr(lib, "dynamic_img_size", False) or not getattr(pe, "flatten", True):
            raise BackboneError(f"timm ViT for '{name}' must be built without dynamic_img_size")
        return SourceModel(family="vit", source_embedder=_ViTEmbedder(pe, image_size), encoder=_ViTEncoder(lib),
                           source_head=_ViTHead(lib) if head_out else None, **common)
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
                       source_embedder=_HFEmbedder(emb), encoder=_HFEncoder(body, project),
                       source_head=head, embed_dim=embed_dim, feature_dim=cfg.hidden_size,
                       num_source_classes=cfg.vocab_size if head is not None else None,
                       max_tokens=cfg.max_position_embeddings - offset, position_offset=offset,
                       hub_id=hub_id, tiny=tiny)

# ---------------------------------------------------------------------------------------------------------------
# Loading: hub (online or cache), local files, saved folders
# ---------------------------------------------------------------------------------------------------------------


def _hub_offline(timeout: float = 3.0) -> bool:
    """True when HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set (read now, not at import) or one TCP connect to the
    hub endpoint fails: huggingface_hub would otherwise retry 5 times with back-off (~25 s per file)."""
    if any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
           for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from urllib.parse import urlparse
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False                        # behind a proxy a direct probe says nothing; let the hub client try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return False
    except OSError:
        return True


def _one_line(e: BaseException, limit: int = 160) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _hub_error(spec: BackboneSpec, reason: str) -> BackboneError:
    return BackboneError(
        f"cannot load pretrained weights for '{spec.name}' (Hugging Face Hub repo '{spec.hub_repo}', "
        f"{spec.library} id '{spec.hub_id}'): {reason}; download them where a network exists and pass the file "
        f"or folder as train.py --weights PATH (weights='/path/to/model.safetensors'), or use --tiny "
        f"(tiny=True) / pretrained=False for random weights")


def _weights_file(folder: Path) -> Path | None:
    for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "pytorch_model.pth"):
        if (folder / f).is_file():
            return folder / f
    return None


def _timm_from_folder(folder: Path, kw: dict) -> nn.Module:
    """timm's own 'local-dir:' loader: config.json (architecture + model_args) and model.safetensors."""
    import timm
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kw)
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"cannot load timm folder '{folder}': {_one_line(e)}") from None


def _build_timm(spec: BackboneSpec, tiny: bool, pretrained: bool, weights: str | None, kw: dict) -> nn.Module:
    import timm
    kwargs = {**spec.config, **(spec.tiny if tiny else {}), **kw}
    if weights is not None:
        w = Path(weights)
        if w.is_dir() and (w / "config.json").is_file():   # a timm hub-style folder (config.json + weights)
            return _timm_from_folder(w, kw)
        file = _weights_file(w) if w.is_dir() else w
        if file is None or not file.is_file():
            raise BackboneError(f"weights '{weights}' for '{spec.name}' not found: pass a .safetensors/.pth/.npz "
                                f"file or a folder with model.safetensors (and optionally timm's config.json)")
    elif pretrained and not tiny:
        from huggingface_hub import hf_hub_download
        offline = _hub_offline()
        try:
            file = Path(hf_hub_download(spec.hub_repo, "model.safetensors", local_files_only=offline))
        except Exception as e:  # noqa: BLE001 (hub client raises many types; reduced to one line)
            raise _hub_error(spec, "hub unreachable (offline) and not in the local cache" if offline
                             else _one_line(e)) from None
    else:
        return timm.create_model(spec.hub_id, pretrained=False, **kwargs)   # random init (tiny or pretrained=False)
    # num_classes in the overlay: timm drops the classifier when it differs from the tag's class count
    num_classes = kwargs.get("num_classes") or timm.models.get_pretrained_cfg(spec.hub_id).num_classes
    overlay = dict(file=str(file), custom_load=file.suffix == ".npz", num_classes=num_classes)
    try:
        return timm.create_model(spec.hub_id, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"weights '{file}' do not fit '{spec.hub_id}': {_one_line(e)}") from None


def _hf_kwargs(dropout: float | None) -> dict:
    kw = dict(attn_implementation="eager")
    if dropout is not None:
        kw.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return kw


def _build_hf(spec: BackboneSpec, tiny: bool, pretrained: bool, weights: str | None, dropout) -> nn.Module:
    import transformers
    cls = transformers.RobertaForMaskedLM
    if weights is not None and Path(weights).is_dir():
        if (Path(weights) / "config.json").is_file():          # a save_pretrained / hub snapshot folder
            return _load_hf_folder(Path(weights), dropout)
        weights = _weights_file(Path(weights)) or weights       # a folder holding only the weights file
    if weights is None and pretrained and not tiny:
        offline = _hub_offline()
        try:
            return cls.from_pretrained(spec.hub_id, local_files_only=offline, **_hf_kwargs(dropout))
        except Exception as e:  # noqa: BLE001
            raise _hub_error(spec, "hub unreachable (offline) and not in the local cache" if offline
                             else _one_line(e)) from None
    lib = cls(transformers.RobertaConfig(**(spec.tiny if tiny else spec.config), **_hf_kwargs(dropout)))
    if weights is not None:                       # a single state-dict file in RobertaForMaskedLM's key names
        w = Path(weights)
        if not w.is_file():
            raise BackboneError(f"weights '{w}' for '{spec.name}' not found: pass a save_pretrained folder "
                                f"or a model.safetensors / pytorch_model.bin file")
        if w.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(w))
        else:
            sd = torch.load(w, map_location="cpu", weights_only=True)
        missing, _ = lib.load_state_dict(sd, strict=False)
        tied = {"lm_head.decoder.weight", "lm_head.decoder.bias"}
        if set(missing) - tied:
            raise BackboneError(f"weights '{w}' miss {len(set(missing) - tied)} RobertaForMaskedLM tensors, e.g. "
                                f"'{sorted(set(missing) - tied)[0]}'; pass a save_pretrained folder instead")
        lib.tie_weights()
    return lib


def _load_hf_folder(folder: Path, dropout) -> nn.Module:
    """Any BERT-family folder: AutoModelForMaskedLM if the checkpoint is an MLM one, else AutoModel (no head)."""
    import transformers
    try:
        cfg = transformers.AutoConfig.from_pretrained(folder)
        mlm = any(a.endswith("ForMaskedLM") for a in (cfg.architectures or []))
        auto = transformers.AutoModelForMaskedLM if mlm else transformers.AutoModel
        return auto.from_pretrained(folder, **_hf_kwargs(dropout))
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"cannot load Hugging Face folder '{folder}': {_one_line(e)}") from None


def build_backbone(name_or_path: str, *, tiny: bool = False, pretrained: bool = True, weights: str | None = None,
                   drop_path_rate: float | None = None, dropout: float | None = 0.0) -> SourceModel:
    """Build θ^S_0 as a SourceModel.

    name_or_path: a key of BACKBONES, or a local folder (a save_backbone folder, a timm hub-style folder with
        config.json + model.safetensors, or any Hugging Face BERT-family folder from save_pretrained).
    tiny: small random-init variant of the same classes (no published weights; `pretrained` is then ignored).
    pretrained: load the hub weights (needs a network or the local Hugging Face cache); False = random init.
    weights: a local weights file or folder for a BACKBONES name (overrides the hub).
    drop_path_rate: timm stochastic depth (None = timm default, Swin-B 0.1 as in ORCA); BERT-family has none.
    dropout: hidden and attention dropout of the body (HF hidden_dropout_prob / attention_probs_dropout_prob; timm
        proj_drop_rate / attn_drop_rate). Default 0.0, ORCA's `drop_out` in every config (configs/*.yaml);
        None keeps the library / checkpoint default (roberta-base: 0.1).
    Raises BackboneError (one line) for unknown names, missing files and unreachable weights.
    """
    # timm's `drop_rate` is only the classifier-head dropout; HF's hidden dropout is timm's proj_drop_rate
    timm_kw = {k: v for k, v in dict(drop_path_rate=drop_path_rate, proj_drop_rate=dropout,
                                     attn_drop_rate=dropout).items() if v is not None}
    if name_or_path in BACKBONES:
        spec = BACKBONES[name_or_path]
        if spec.library == "timm":
            lib = _build_timm(spec, tiny, pretrained, weights, timm_kw)
            return _wrap_timm(lib, spec.name, spec.hub_id, tiny)
        if drop_path_rate:
            raise BackboneError(f"'{spec.name}' has no stochastic depth: pass drop_path_rate=None or 0")
        return _wrap_hf(_build_hf(spec, tiny, pretrained, weights, dropout), spec.name, spec.hub_id, tiny)
    path = Path(name_or_path)
    if not path.exists():
        raise BackboneError(f"unknown backbone '{name_or_path}': expected one of {sorted(BACKBONES)} or an existing "
                            f"local folder with config.json (from save_backbone / save_pretrained)")
    if weights is not None:
        raise BackboneError(f"weights= is only for BACKBONES names ({sorted(BACKBONES)}); '{name_or_path}' is a "
                            f"path, pass the weights folder itself as name_or_path")
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise BackboneError(f"'{path}' is not a folder with config.json: pass a folder from save_backbone or "
                            f"save_pretrained, or a BACKBONES name with weights='{path}'")
    try:
        meta = json.loads((path / _META_FILE).read_text()) if (path / _META_FILE).is_file() else {}
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise BackboneError(f"cannot read the json files in '{path}': {_one_line(e)}") from None
    name, is_tiny, hub_id = meta.get("name", str(path)), bool(meta.get("tiny", False)), meta.get("hub_id")
    if "architecture" in cfg:                                     # timm folder (save_for_hf format)
        return _wrap_timm(_timm_from_folder(path, timm_kw), name, hub_id, is_tiny)
    if "model_type" in cfg:                                       # transformers folder
        if drop_path_rate:
            raise BackboneError(f"'{path}' is a BERT-family encoder without stochastic depth: drop_path_rate=None")
        return _wrap_hf(_load_hf_folder(path, dropout), name, hub_id, is_tiny)
    raise BackboneError(f"'{path / 'config.json'}' has neither 'architecture' (timm) nor 'model_type' "
                        f"(transformers): not a backbone folder")


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
    (folder / _META_FILE).write_text(json.dumps(meta, indent=2))
    return folder
