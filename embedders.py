"""Modality-specific target embedders e(·; θ_e) of MoNA (the φ_e that stage 1 meta-learns).

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. Implements §2.1 (the embedder e of g_θ = h ∘ f ∘ e) and Appendix A.2 (the 2D and 1D
embedder designs, which "follow exactly the designs in ORCA"), plus ORCA's two initialisations
(sjunhongshen/ORCA, `src/embedder.py`: `Embeddings2D`, `Embeddings1D`, `get_tgt_model`): random = vanilla
Finetuning; source-derived = Finetuning++ / ORCA / MoNA start.

Paper map
---------
| paper symbol                  | code                                    | shape                          |
|-------------------------------|-----------------------------------------|--------------------------------|
| x^t (2D task input)           | `x` in `Embedder2D.forward`             | (B, C, H, W)                   |
| resize to 224²                | `F.interpolate(..., image_size)`        | (B, C, 224, 224)               |
| N patches of size C×4²        | conv with kernel = stride = p           | N = (224/p)² = 3136 for p = 4  |
| e_2D: R^{N×16C} -> R^{N×128}  | `Embedder2D.projection` + `.norm`       | (B, N, D), D = source.embed_dim|
| x^t (1D task input)           | `x` in `Embedder1D.forward`             | (B, C, L)                      |
| N patches of size C×L/N       | conv with kernel = stride = `stack_num` | N = L / stack_num              |
| e_1D: R^{CL} -> R^{768N}      | `Embedder1D.projection`, `.norm`,       | (B, N, 768)                    |
|                               | `.position_embeddings`                  | positions (N, 768)             |
| θ_e (target), φ_e (stage 1)   | the parameters of either embedder       |                                |
| θ^S_e0 (source embedder)      | `SourceModel.source_embedder`           | raw source input -> (B, N, D)  |

The embedder's output tokens are what the encoder θ_f (`SourceModel.encoder`) consumes. For Swin the
tokens carry no position information (the body uses relative position bias); for ViT/CLIP the encoder
adds its own cls token and absolute positions (backbones.py), so the 2D embedder never adds positions.
For RoBERTa the embedder adds (learnable, source-initialised) absolute positions itself, because
RoBERTa's own embedding module is not used.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EmbedderError(ValueError):
    """Bad embedder configuration or input; the message is one line (train.py prints it as is)."""


# ---------------------------------------------------------------------------------------------------
# Defaults (ORCA's src/embedder.py)
# ---------------------------------------------------------------------------------------------------
TRUNC_NORMAL_STD = 0.02        # 2D conv random init (ORCA: timm trunc_normal_(std=.02))
XAVIER_GAIN = math.sqrt(2.0)   # 1D conv random init (ORCA conv_init: xavier_uniform_(gain=√2))
LAYERNORM_EPS = 1e-5           # nn.LayerNorm default, as ORCA's embedders (Swin and RoBERTa also use 1e-5)


# ---------------------------------------------------------------------------------------------------
# e_2D (App. A.2, first bullet; ORCA's Embeddings2D)
# ---------------------------------------------------------------------------------------------------
class Embedder2D(nn.Module):
    """e_2D: (B, C, H, W) -> tokens (B, N, D), N = (image_size / p)².

    Steps: resize to image_size × image_size (bilinear) -> non-overlapping p×p patches -> linear
    projection to the body width D -> LayerNorm(D). No position embedding (see module docstring).

    `antialias=False` reproduces ORCA: it ran torchvision < 0.17, whose `Resize` on tensors did not
    antialias (torchvision >= 0.17 antialiases by default). The two differ only when the input is
    *downsampled* (PSICOV 512 -> 224); all other NB360/PDE inputs are upsampled, where they coincide.
    (backbones.py's source embedder resizes with antialias on; it only ever upsamples CIFAR-10 32 -> 224.)
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 4, image_size: int = 224,
                 antialias: bool = False):
        super().__init__()
        if in_channels < 1 or embed_dim < 1 or patch_size < 1:
            raise EmbedderError(f"Embedder2D: in_channels, embed_dim, patch_size must be >= 1, got "
                                f"{in_channels}, {embed_dim}, {patch_size}")
        if image_size % patch_size != 0:
            raise EmbedderError(f"Embedder2D: image_size {image_size} is not a multiple of patch_size "
                                f"{patch_size}; pick a body whose image size is divisible by its patch size")
        self.in_channels, self.embed_dim = in_channels, embed_dim
        self.patch_size, self.image_size, self.antialias = patch_size, image_size, antialias
        self.grid = (image_size // patch_size, image_size // patch_size)      # (56, 56) for Swin-B
        self.num_tokens = self.grid[0] * self.grid[1]                          # N = 3136 for Swin-B
        # A Conv2d with kernel = stride = p is exactly a Linear on each flattened C·p² patch:
        # e_2D: R^{N×16C} -> R^{N×128} (p = 4, D = 128 for Swin-B); weight (D, C, p, p).
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYERNORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise EmbedderError(f"Embedder2D expected input (B, {self.in_channels}, H, W), got "
                                f"{tuple(x.shape)}; check the task's input_shape / channel count")
        S = self.image_size
        if tuple(x.shape[-2:]) != (S, S):
            # resize C×H×W -> C×224² (bilinear; a no-op when already S×S)
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False,
                              antialias=self.antialias)                        # (B, C, S, S)
        # (S divisible by p, so ORCA's "pad to a multiple of the patch size" is a no-op and omitted.)
        # token_n = W_e · vec(patch_n) + b_e
        x = self.projection(x)                                                 # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)                                       # (B, N, D), row-major grid
        # LayerNorm over the D features of each token
        return self.norm(x)                                                    # (B, N, D)


# ---------------------------------------------------------------------------------------------------
# e_1D (App. A.2, second bullet; ORCA's Embeddings1D)
# ---------------------------------------------------------------------------------------------------
def compute_stack_num(seq_len: int, target_seq_len: int) -> int:
    """ORCA's rule: the smallest divisor i of L with L / i <= target_seq_len (always exists: i = L)."""
    if seq_len < 1 or target_seq_len < 1:
        raise EmbedderError(f"stack_num: seq_len and target_seq_len must be >= 1, got {seq_len}, "
                            f"{target_seq_len}")
    for i in range(1, seq_len + 1):
        if seq_len % i == 0 and seq_len // i <= target_seq_len:
            return i
    return seq_len  # unreachable: i = L satisfies L / L = 1 <= target_seq_len


class Embedder1D(nn.Module):
    """e_1D: (B, C, L) -> tokens (B, N, D), N = L / stack_num.

    Steps: patches of length stack_num (Conv1d, kernel = stride = stack_num) -> LayerNorm(D) -> + learnable
    positional embeddings. ORCA normalises *first* and adds positions after; RoBERTa's own embedding
    module does the opposite (positions, then LayerNorm). We follow ORCA, as the paper does.

    `position_embeddings` holds only the N rows the embedder uses (token t gets row t); build_embedder
    fills them from the source's table (RoBERTa position ids padding_idx+1 … N+padding_idx, i.e. rows
    2 … N+1 of its 514-row table; see `source_position_rows`). ORCA keeps the whole 514-row RoBERTa
    table but only ever reads these N rows, so the function and its gradients are identical.

    Attributes: stack_num, num_tokens (= N), seq_len, in_channels, embed_dim.
    """

    def __init__(self, in_channels: int, seq_len: int, embed_dim: int, target_seq_len: int,
                 max_tokens: int | None = None):
        super().__init__()
        if in_channels < 1 or embed_dim < 1:
            raise EmbedderError(f"Embedder1D: in_channels and embed_dim must be >= 1, got {in_channels}, "
                                f"{embed_dim}")
        self.in_channels, self.seq_len, self.embed_dim = in_channels, seq_len, embed_dim
        self.target_seq_len = target_seq_len
        self.stack_num = compute_stack_num(seq_len, target_seq_len)          # s
        self.num_tokens = seq_len // self.stack_num                           # N = L / s
        if max_tokens is not None and self.num_tokens > max_tokens:
            raise EmbedderError(f"Embedder1D: L={seq_len} with target_seq_len={target_seq_len} gives "
                                f"{self.num_tokens} tokens but the body accepts at most {max_tokens}; "
                                f"lower target_seq_len to <= {max_tokens}")
        # patch projection: each length-s window of the C channels -> one D-dim token
        self.projection = nn.Conv1d(in_channels, embed_dim, kernel_size=self.stack_num,
                                    stride=self.stack_num)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYERNORM_EPS)
        self.position_embeddings = nn.Parameter(torch.zeros(self.num_tokens, embed_dim))  # (N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.seq_len:
            raise EmbedderError(f"Embedder1D expected input (B, {self.in_channels}, {self.seq_len}), got "
                                f"{tuple(x.shape)}; check the task's input_shape")
        # token_t = W_e · vec(x[:, t·s:(t+1)·s]) + b_e
        x = self.projection(x).transpose(1, 2)                                 # (B, N, D)
        # LayerNorm first (ORCA order) ...
        x = self.norm(x)                                                       # (B, N, D)
        # ... then + p_t (learnable absolute positions)
        return x + self.position_embeddings.unsqueeze(0)                       # (B, N, D)


# ---------------------------------------------------------------------------------------------------
# Looking up source tensors (θ^S_e0) to copy from
# ---------------------------------------------------------------------------------------------------
def source_position_rows(source, num_tokens: int) -> torch.Tensor | None:
    """The N rows of the source position table that token positions 0 … N-1 use, or None.

    Token t must get the source's position id of the t-th real token: padding_idx + 1 + t = 2 + t for
    RoBERTa (ORCA's `create_position_ids_from_inputs_embeds`), t for BERT. backbones.py's
    `source_position_table()` already drops RoBERTa's two reserved rows and returns (max_tokens, D), so
    row t is token t. A table longer than max_tokens (a whole 514-row table) is read from row
    rows - max_tokens, so either convention gives the same N rows.
    """
    fn = getattr(source, "source_position_table", None)
    table = fn() if callable(fn) else None
    if table is None:
        return None
    table = table.detach()
    max_tokens = getattr(source, "max_tokens", None) or table.shape[0]
    offset = max(table.shape[0] - max_tokens, 0)
    if offset + num_tokens > table.shape[0]:
        raise EmbedderError(f"source position table has {table.shape[0]} rows (offset {offset}) but "
                            f"{num_tokens} tokens need {offset + num_tokens}; lower target_seq_len")
    return table[offset:offset + num_tokens]                                   # (N, D)


def _find_layernorm(module: nn.Module, width: int) -> nn.LayerNorm | None:
    """The LayerNorm(width) inside `module` (timm PatchEmbed `.norm`, HF `embeddings.LayerNorm`)."""
    found = [m for m in module.modules() if isinstance(m, nn.LayerNorm)
             and tuple(m.normalized_shape) == (width,) and m.weight is not None]
    if len(found) > 1:
        raise EmbedderError(f"source embedder has {len(found)} LayerNorm({width}) modules; cannot tell "
                            f"which one is the patch-embedding norm")
    return found[0] if found else None


def _find_patch_projection(module: nn.Module, embed_dim: int, patch_size: int) -> nn.Conv2d | None:
    """The source patch projection Conv2d(3, D, p, stride p) (timm PatchEmbed `.proj`)."""
    found = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.out_channels == embed_dim
             and tuple(m.kernel_size) == (patch_size, patch_size)
             and tuple(m.stride) == (patch_size, patch_size)]
    if len(found) != 1:
        return None
    return found[0]


def _source_embedder(source) -> nn.Module:
    mod = getattr(source, "source_embedder", None)
    if not isinstance(mod, nn.Module):
        raise EmbedderError(f"source model {getattr(source, 'name', '?')!r} exposes no source_embedder "
                            f"module to copy the embedder initialisation from")
    return mod


# ---------------------------------------------------------------------------------------------------
# Builders and initialisation (ORCA's get_tgt_model: random branch, and `train_embedder=True` branch)
# ---------------------------------------------------------------------------------------------------
def _random_init_(embedder: nn.Module) -> None:
    """Vanilla-finetuning init (ORCA with `embedder_epochs: 0`: the embedder's random initialisation)."""
    with torch.no_grad():
        if isinstance(embedder, Embedder2D):
            nn.init.trunc_normal_(embedder.projection.weight, std=TRUNC_NORMAL_STD)
        else:
            nn.init.xavier_uniform_(embedder.projection.weight, gain=XAVIER_GAIN)
        nn.init.zeros_(embedder.projection.bias)
        nn.init.ones_(embedder.norm.weight)
        nn.init.zeros_(embedder.norm.bias)


def build_embedder(source, in_channels: int, seq_len: int | None = None,
                   target_seq_len: int | None = None) -> nn.Module:
    """Target embedder θ_e for `source` (a backbones.SourceModel), randomly initialised.

    2D (source.modality == "2d"): Embedder2D(in_channels, source.embed_dim, source.patch_size,
    source.image_size); conv trunc_normal(std 0.02), bias 0; LayerNorm 1/0.
    1D: Embedder1D(in_channels, seq_len, source.embed_dim, target_seq_len or source.max_tokens);
    conv xavier_uniform(gain √2), bias 0; LayerNorm 1/0; positions copied from the source table in
    both the random and the source branch, as ORCA does (trunc_normal(0.02) when the source has none).
    """
    modality = getattr(source, "modality", None)
    D = int(source.embed_dim)
    if modality == "2d":
        embedder: nn.Module = Embedder2D(in_channels, D, int(source.patch_size), int(source.image_size))
        _random_init_(embedder)
        return embedder
    if modality != "1d":
        raise EmbedderError(f"source modality must be '2d' or '1d', got {modality!r}")
    if seq_len is None:
        raise EmbedderError("build_embedder: a 1D body needs seq_len (the task's input length L)")
    max_tokens = getattr(source, "max_tokens", None)
    tsl = int(target_seq_len) if target_seq_len is not None else int(max_tokens)
    embedder = Embedder1D(in_channels, int(seq_len), D, tsl, max_tokens=max_tokens)
    _random_init_(embedder)
    rows = source_position_rows(source, embedder.num_tokens)
    with torch.no_grad():
        if rows is not None:
            embedder.position_embeddings.copy_(rows)
        else:
            nn.init.trunc_normal_(embedder.position_embeddings, std=TRUNC_NORMAL_STD)
    return embedder


def init_embedder_from_source(embedder: nn.Module, source) -> list[str]:
    """Finetuning++ / ORCA / MoNA-start initialisation from θ^S_e0 (ORCA's `train_embedder=True` branch).

    2D: projection weight <- source patch kernel (D, 3, p, p) tiled along input channels, target
        channel c <- source channel c mod 3, *no* rescaling by 3/C (as ORCA); bias copied
        (CLIP's patch conv has no bias: ours stays 0). LayerNorm copied from the source patch-embedding
        norm where it has one (Swin has; ViT and CLIP have none: their norms act after the positions,
        inside θ_f, so ours stays 1/0).
    1D: LayerNorm <- source `embeddings.LayerNorm`; positions <- the source table (as build_embedder).
        The Conv1d keeps its random init: RoBERTa has no patch projection to copy.
    Returns the names (in `embedder.state_dict()`) of the tensors it overwrote with source values.
    """
    src = _source_embedder(source)
    copied: list[str] = []
    with torch.no_grad():
        if isinstance(embedder, Embedder2D):
            proj = _find_patch_projection(src, embedder.embed_dim, embedder.patch_size)
            if proj is None:
                raise EmbedderError(f"no Conv2d(·, {embedder.embed_dim}, {embedder.patch_size}, stride "
                                    f"{embedder.patch_size}) found in the source embedder of "
                                    f"{getattr(source, 'name', '?')!r} to initialise from")
            W_src = proj.weight.detach()                                       # (D, C_src, p, p)
            # θ_e[:, c] = θ^S_e0[:, c mod C_src]  (tiling, no 3/C rescaling)
            idx = torch.arange(embedder.in_channels, device=W_src.device) % W_src.shape[1]
            embedder.projection.weight.copy_(W_src[:, idx])                   # (D, C, p, p)
            copied.append("projection.weight")
            if proj.bias is not None:
                embedder.projection.bias.copy_(proj.bias.detach())            # (D,)
                copied.append("projection.bias")
            norm = _find_layernorm(src, embedder.embed_dim)
            if norm is not None:
                embedder.norm.weight.copy_(norm.weight.detach())
                embedder.norm.bias.copy_(norm.bias.detach())
                copied += ["norm.weight", "norm.bias"]
        elif isinstance(embedder, Embedder1D):
            norm = _find_layernorm(src, embedder.embed_dim)
            if norm is not None:
                embedder.norm.weight.copy_(norm.weight.detach())
                embedder.norm.bias.copy_(norm.bias.detach())
                copied += ["norm.weight", "norm.bias"]
            rows = source_position_rows(source, embedder.num_tokens)
            if rows is not None:
                embedder.position_embeddings.copy_(rows)
                copied.append("position_embeddings")
        else:
            raise EmbedderError(f"init_embedder_from_source: expected Embedder2D or Embedder1D, got "
                                f"{type(embedder).__name__}")
    return copied
