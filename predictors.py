"""Modality-specific predictors h(·; θ_h) and the assembled target model g_θ = h ∘ f ∘ e.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. Implements §2.1 (the architecture g_θ with θ = {θ_e, θ_f, θ_h}; the target encoder
θ^T_f is initialised from θ^S_f0) and Appendix A.2 (the classification predictor h_c and the dense
predictor h_d, "following exactly the designs in ORCA"); the 1D dense head, which the paper does not
describe, is ORCA's parameter-free one (`src/embedder.py`, `get_tgt_model`).

Paper map
---------
| paper symbol                      | code                                   | shape                          |
|-----------------------------------|----------------------------------------|--------------------------------|
| encoder output, N' tokens of d    | `z`                                    | (B, N', d); h_c: (B, P+N', d)  |
| h_c: R^{N'd} -> R^K               | `ClassificationHead`                   | (B, P+N', d) -> (B, K)         |
|   average pooling (see below)     | `ClassificationHead.readout`           | (B, d)                         |
|   linear projection               | `ClassificationHead.linear`            | (B, K)                         |
| h_d: R^{49d} -> R^{KHW}           | `DenseHead2D`                          | (B, 49, d) -> (B, K, H, W)     |
|   linear 7²×d -> 7²×3072          | `DenseHead2D.decoder` (1×1 conv)       | (B, 3·s², 7, 7), s = 32        |
|   pixel rearrangement -> 3×224²   | `DenseHead2D.shuffle` (PixelShuffle s) | (B, 3, 224, 224)               |
|   pooling 3×224² -> K×224²        | adaptive avg over the channel axis     | (B, K, 224, 224)               |
|   pooling K×224² -> K×H×W         | `DenseHead2D.spatial_pool`             | (B, K, H, W)                   |
| 1D dense head (ORCA, no params)   | `DenseHead1D`                          | (B, T, d) -> (B, C_out, L)     |
| g_θ = h ∘ f ∘ e                   | `TargetModel`                          | x -> prediction                |
| θ_e / φ_e, θ_f, θ_h               | `.embedder`, `.encoder`, `.predictor`  |                                |

Readout of h_c: the body's own (backbones.Readout, the same module as `SourceModel.readout`, no parameters), so
the head, MoNA's outer loss and the probe pool alike: the mean over the N' tokens for Swin-B (App. A.2) and the
BERT-family; the final-norm class token for ViT/CLIP. h_c therefore consumes `encoder(tokens, return_prefix=True)`
(`ClassificationHead.return_prefix = True`; the dense heads' is False: they keep the patch tokens), and
`TargetModel.forward` asks the encoder for what its predictor consumes.
DEVIATION from App. A.2 (average pooling): ViT/CLIP bodies read the class token, as their pretraining read them
(backbones.py's docstring); App. A.2's average pooling describes Swin-B, which has no class token.

Initialisation (library defaults, as ORCA): the classification Linear keeps PyTorch's
default init (ORCA creates a plain `nn.Linear`); the dense decoder conv gets normal(0, 0.02), bias 0,
which is what Hugging Face's `SwinForMaskedImageModeling` gives its newly created decoder conv.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import masked_mean
from embedders import build_embedder, init_embedder_from_source


class PredictorError(ValueError):
    """Bad predictor / target-model configuration or input; one-line message."""


DECODER_INIT_STD = 0.02   # HF SwinPreTrainedModel._init_weights (initializer_range) for the new decoder conv
RGB_CHANNELS = 3          # the SimMIM decoder reconstructs 3 channels before the channel pooling


# ---------------------------------------------------------------------------------------------------
# h_c: classification (App. A.2, first bullet of the predictor part)
# ---------------------------------------------------------------------------------------------------
class ClassificationHead(nn.Module):
    """h_c: the body's readout, then Linear(d, K). (B, P+N', d) -> (B, K).

    `readout`: a parameter-free module (feats, attention_mask) -> (B, d), the body's backbones.Readout
    (build_predictor passes `source.feature_pool`); None = the mean over all tokens given. The input is
    `encoder(tokens, return_prefix=True)` (class attribute `return_prefix`)."""

    return_prefix = True

    def __init__(self, feature_dim: int, num_classes: int, readout: nn.Module | None = None):
        super().__init__()
        if num_classes < 1:
            raise PredictorError(f"ClassificationHead: num_classes must be >= 1, got {num_classes}")
        if readout is not None and any(True for _ in readout.parameters()):
            raise PredictorError("ClassificationHead: the readout must have no parameters (it is not part of θ_h)")
        self.linear = nn.Linear(feature_dim, num_classes)
        self.readout = readout

    def forward(self, z: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # z̄ = (1/N') Σ_n z_n (App. A.2; real tokens only under a mask), or z_cls for ViT/CLIP (DEVIATION above)
        z_bar = masked_mean(z, attention_mask) if self.readout is None else self.readout(z, attention_mask)  # (B, d)
        # logits = W_h z̄ + b_h
        return self.linear(z_bar)                                              # (B, K)


# ---------------------------------------------------------------------------------------------------
# h_d: 2D dense prediction (App. A.2, second bullet; the SimMIM decoder of SwinForMaskedImageModeling, as ORCA)
# ---------------------------------------------------------------------------------------------------
class DenseHead2D(nn.Module):
    """h_d: tokens (B, N', d) on a `grid` -> (B, K, H, W).

    Token n sits at grid cell (n // grid[1], n % grid[1]) (row-major, as the bodies flatten). Each token
    is mapped by one Linear d -> 3·s² (a 1×1 conv on the (B, d, g0, g1) map), the 3·s² values are
    rearranged into an s×s patch of 3 channels (PixelShuffle(s): value (c, i, j) of token (r, q) lands on
    pixel (r·s + i, q·s + j) of channel c), the 3 channels are adaptively averaged to K
    (AdaptiveAvgPool1d over the channel axis: bins [⌊kC/K⌋, ⌈(k+1)C/K⌉)), and the map is adaptively
    averaged to the task resolution `out_size` (AdaptiveAvgPool2d; it also upsamples, e.g. 224 -> 512).
    Swin-B: grid (7, 7), s = 32, 3·s² = 3072, map 224²; ViT-B/16: grid (14, 14), s = 16, map 224².
    """

    return_prefix = False                                                     # patch tokens only

    def __init__(self, feature_dim: int, grid: tuple[int, int], output_stride: int, out_channels: int,
                 out_size: tuple[int, int]):
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.output_stride, self.out_channels = int(output_stride), int(out_channels)
        self.out_size = (int(out_size[0]), int(out_size[1]))
        s = self.output_stride
        # linear projection per token: R^d -> R^{3·s²} (= nn.Linear applied to each token)
        self.decoder = nn.Conv2d(feature_dim, RGB_CHANNELS * s * s, kernel_size=1)
        nn.init.normal_(self.decoder.weight, std=DECODER_INIT_STD)
        nn.init.zeros_(self.decoder.bias)
        self.shuffle = nn.PixelShuffle(s)
        self.channel_pool = nn.AdaptiveAvgPool1d(self.out_channels)
        self.spatial_pool = nn.AdaptiveAvgPool2d(self.out_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, N, d = z.shape
        g0, g1 = self.grid
        if N != g0 * g1:
            raise PredictorError(f"DenseHead2D expected {g0}x{g1}={g0 * g1} tokens, got {N}; the body's "
                                 f"output grid does not match image_size / output_stride")
        z = z.transpose(1, 2).reshape(B, d, g0, g1)                            # (B, d, 7, 7)
        # y_n = W_h z_n + b_h  per token
        y = self.decoder(z)                                                    # (B, 3·s², 7, 7)
        # pixel rearrangement: 7²×3072 -> 3×224²
        y = self.shuffle(y)                                                    # (B, 3, 224, 224)
        _, C3, H, W = y.shape
        # pool over channels 3 -> K at every pixel
        y = self.channel_pool(y.flatten(2).transpose(1, 2))                    # (B, 224², K)
        y = y.transpose(1, 2).reshape(B, self.out_channels, H, W)              # (B, K, 224, 224)
        # pool over space 224² -> H_out × W_out
        return self.spatial_pool(y)                                            # (B, K, H_out, W_out)


# ---------------------------------------------------------------------------------------------------
# 1D dense prediction (ORCA's parameter-free head: AdaptiveAvgPool1d over the hidden axis)
# ---------------------------------------------------------------------------------------------------
class DenseHead1D(nn.Module):
    """(B, T, d) -> (B, C_out, L) with L = T · stack_num; no parameters.

    Token t covers input positions [t·s, (t+1)·s) (s = stack_num, the embedder's patch length). Its d
    features are averaged in C_out·s contiguous groups (AdaptiveAvgPool1d over the hidden axis); group
    k = c·s + j becomes output channel c at position t·s + j. So every output value comes from the token
    that embedded the same positions. (If d < C_out·s the adaptive bins overlap and features repeat, as
in ORCA.)

    DEVIATION from ORCA for C_out > 1 only: ORCA reshapes (B, T, C_out·s) straight to (B, C_out, L),
    which gives channel c the values of tokens [c·T/C_out, (c+1)·T/C_out) laid end to end, i.e. values
    from other positions; we permute (B, T, C_out, s) -> (B, C_out, T, s) first because that keeps each
    value at its own position. For C_out = 1 (every 1D task of the paper) the two are identical.
    """

    return_prefix = False

    def __init__(self, out_channels: int, stack_num: int, seq_len: int):
        super().__init__()
        if seq_len % stack_num != 0:
            raise PredictorError(f"DenseHead1D: output length {seq_len} is not a multiple of stack_num "
                                 f"{stack_num}")
        self.out_channels, self.stack_num, self.seq_len = int(out_channels), int(stack_num), int(seq_len)
        self.num_tokens = seq_len // stack_num

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, T, d = z.shape
        C, s = self.out_channels, self.stack_num
        if T != self.num_tokens:
            raise PredictorError(f"DenseHead1D expected {self.num_tokens} tokens (L={self.seq_len} / "
                                 f"stack_num={s}), got {T}")
        # average each token's d features in C·s groups
        y = F.adaptive_avg_pool1d(z, C * s)                                    # (B, T, C·s)
        y = y.reshape(B, T, C, s).permute(0, 2, 1, 3)                          # (B, C, T, s)
        return y.reshape(B, C, T * s)                                          # (B, C, L), l = t·s + j


# ---------------------------------------------------------------------------------------------------
# Builders and the target model g_θ = h ∘ f ∘ e (§2.1)
# ---------------------------------------------------------------------------------------------------
def build_predictor(source, spec, stack_num: int | None = None) -> nn.Module:
    """θ_h for task `spec` (a data.TaskSpec) on body `source` (a backbones.SourceModel).

    point -> ClassificationHead(source.feature_dim, spec.num_classes, readout=source.feature_pool)
    dense, 2d -> DenseHead2D(d, grid = image_size / output_stride, output_stride, C_out, (H, W))
    dense, 1d -> DenseHead1D(C_out, stack_num, L); stack_num from the 1D embedder.
    """
    if spec.output == "point":
        return ClassificationHead(int(source.feature_dim), int(spec.num_classes), readout=source.feature_pool)
    if spec.output != "dense":
        raise PredictorError(f"task {spec.name!r}: output must be 'point' or 'dense', got {spec.output!r}")
    out_shape = tuple(int(v) for v in spec.output_shape)
    if spec.dim == "2d":
        if len(out_shape) != 3:
            raise PredictorError(f"task {spec.name!r}: a 2D dense output_shape is (C_out, H, W), got "
                                 f"{out_shape}")
        g = int(source.image_size) // int(source.output_stride)
        return DenseHead2D(int(source.feature_dim), (g, g), int(source.output_stride), out_shape[0],
                           out_shape[1:])
    if spec.dim == "1d":
        if len(out_shape) != 2:
            raise PredictorError(f"task {spec.name!r}: a 1D dense output_shape is (C_out, L), got "
                                 f"{out_shape}")
        if stack_num is None:
            raise PredictorError(f"task {spec.name!r}: the 1D dense head needs the embedder's stack_num")
        return DenseHead1D(out_shape[0], int(stack_num), out_shape[1])
    raise PredictorError(f"task {spec.name!r}: dim must be '1d' or '2d', got {spec.dim!r}")


class TargetModel(nn.Module):
    """g_θ(x) = h(f(e(x; θ_e); θ_f); θ_h).

    `.embedder` is θ_e (φ_e in stage 1), `.encoder` is θ_f, `.predictor` is θ_h. state_dict keys are
    "embedder.*", "encoder.*" (same names as SourceModel.encoder.state_dict()), "predictor.*".
    The encoder returns what the predictor consumes: `encoder(tokens, return_prefix=predictor.return_prefix)`
    (h_c: with ViT/CLIP's class token; dense heads: patch tokens). `feature_pool` is the body's parameter-free
    backbones.Readout (None if not given); `readout(feats, attention_mask)` pools source features like the body.
    """

    def __init__(self, embedder: nn.Module, encoder: nn.Module, predictor: nn.Module,
                 feature_pool: nn.Module | None = None):
        super().__init__()
        self.embedder, self.encoder, self.predictor = embedder, encoder, predictor
        self.feature_pool = feature_pool

    def readout(self, feats: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The body's pooled feature (B, d) of encoder(tokens, attention_mask, return_prefix=True)."""
        if self.feature_pool is None:
            return masked_mean(feats, attention_mask)
        return self.feature_pool(feats, attention_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embedder(x)                                              # (B, N, D)
        # h_c gets (B, P + N', d) (ViT/CLIP's class token included), dense heads (B, N', d)
        features = self.encoder(tokens, return_prefix=getattr(self.predictor, "return_prefix", False))
        return self.predictor(features)                                        # (B, K) or (B, K, ...)


def build_target_model(spec, source, *, init: str = "random") -> TargetModel:
    """Assemble g_θ for task `spec` on body `source`.

    init="random": vanilla-finetuning embedder init; init="source": Finetuning++ / ORCA / MoNA start
    (embedders.init_embedder_from_source). The encoder is the SAME module object as `source.encoder`
    (θ^T_f initialised from θ^S_f0 by sharing, no copy): training the target model changes the source
    model too, so callers that still need the pristine source deep-copy it first
    (`copy.deepcopy(source)`) and build from the copy.
    """
    if init not in ("random", "source"):
        raise PredictorError(f"init must be 'random' or 'source', got {init!r}")
    if spec.dim != source.modality:
        raise PredictorError(f"task {spec.name!r} is {spec.dim} but body {source.name!r} is "
                             f"{source.modality}; use a {spec.dim} backbone for this task")
    in_channels = int(spec.input_shape[0])
    if spec.dim == "1d":
        embedder = build_embedder(source, in_channels, seq_len=int(spec.input_shape[-1]),
                                  target_seq_len=spec.target_seq_len)
    else:
        embedder = build_embedder(source, in_channels)
    if init == "source":
        init_embedder_from_source(embedder, source)
    predictor = build_predictor(source, spec, stack_num=getattr(embedder, "stack_num", None))
    return TargetModel(embedder, source.encoder, predictor, feature_pool=source.feature_pool)
