"""support/backbone_loading.py — where the tensors of a source body θ^S_0 come from: the hub, a local file or folder, or the
library's own random initialisation of the same architecture.

Paper: "Learning Modality Knowledge Alignment for Cross-Modality Transfer" (MoNA), ICML 2024, arXiv 2406.18864.
  §2.1      the target encoder θ^T_f starts from the pretrained θ^S_f0 (pretrained=True);
  Table 2   Train-from-scratch starts from a randomly initialised body of the same architecture (pretrained=False).
backbones.py splits the library model returned here into e / f / h; this module only decides which tensors it holds.

Paper map (what `library_model` returns, by the arguments of backbones.build_backbone):
| paper                          | arguments                                  | tensors                                        |
|--------------------------------|--------------------------------------------|------------------------------------------------|
| θ^S_0, pretrained (§2.1)       | name, pretrained=True                      | hub download, or the local Hugging Face cache  |
| θ^S_0, pretrained (§2.1)       | name, weights=file/folder; or a folder     | that file / folder                             |
| random θ (Table 2, scratch)    | pretrained=False (any source, tiny or not) | the library's own init of the same architecture|
| random θ, small (tests, demo)  | name, tiny=True, no weights                | the library's own init, BackboneSpec.tiny sizes|

The architecture of a scratch body is the one the weights would have had: a folder's config.json (timm's
`local-dir:` model_args, transformers' AutoConfig), or the BACKBONES spec for a name with or without weights=;
its tensors are never read. (Before, pretrained=False was ignored for folders and weights=, so `--method scratch`
silently fine-tuned the checkpoint.) A weights= path that does not exist is an error also under pretrained=False,
so a typo never passes unnoticed.

Weights: hub downloads need a network. When HF_HUB_OFFLINE=1 (read at call time) or the hub is unreachable
(one 3 s TCP probe) only the local cache is tried and a miss raises BackboneError at once, instead of
huggingface_hub's ~25 s of retries per file. Pass `weights=` (a file or folder) or a saved folder instead.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
from torch import nn

META_FILE = "mona_backbone.json"  # written by backbones.save_backbone next to the library's own files


class BackboneError(RuntimeError):
    """A backbone cannot be built or loaded; the message is one line naming what was expected and how to fix it."""

__all__ = ["load_library_model"]


# ---------------------------------------------------------------------------------------------------------------
# Hub reachability and one-line errors
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


# ---------------------------------------------------------------------------------------------------------------
# timm bodies (Swin, ViT, CLIP)
# ---------------------------------------------------------------------------------------------------------------


def _timm_from_folder(folder: Path, kw: dict, pretrained: bool = True) -> nn.Module:
    """timm's own 'local-dir:' loader: config.json (architecture + model_args) and, if pretrained,
    model.safetensors; pretrained=False builds the config's architecture with timm's init (weights not read)."""
    import timm
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=pretrained, **kw)
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"cannot {'load' if pretrained else 'build'} timm folder '{folder}': "
                            f"{_one_line(e)}") from None


def _build_timm(spec: BackboneSpec, tiny: bool, pretrained: bool, weights: str | None, kw: dict) -> nn.Module:
    import timm
    kwargs = {**spec.config, **(spec.tiny if tiny else {}), **kw}
    if weights is not None:
        w = Path(weights)
        if w.is_dir() and (w / "config.json").is_file():   # a timm hub-style folder (config.json + weights)
            return _timm_from_folder(w, kw, pretrained)
        file = _weights_file(w) if w.is_dir() else w
        if file is None or not file.is_file():
            raise BackboneError(f"weights '{weights}' for '{spec.name}' not found: pass a .safetensors/.pth/.npz "
                                f"file or a folder with model.safetensors (and optionally timm's config.json)")
    if not pretrained or (tiny and weights is None):
        return timm.create_model(spec.hub_id, pretrained=False, **kwargs)   # timm's own random init
    if weights is None:
        from huggingface_hub import hf_hub_download
        offline = _hub_offline()
        try:
            file = Path(hf_hub_download(spec.hub_repo, "model.safetensors", local_files_only=offline))
        except Exception as e:  # noqa: BLE001 (hub client raises many types; reduced to one line)
            raise _hub_error(spec, "hub unreachable (offline) and not in the local cache" if offline
                             else _one_line(e)) from None
    # num_classes in the overlay: timm drops the classifier when it differs from the tag's class count
    num_classes = kwargs.get("num_classes") or timm.models.get_pretrained_cfg(spec.hub_id).num_classes
    overlay = dict(file=str(file), custom_load=file.suffix == ".npz", num_classes=num_classes)
    try:
        return timm.create_model(spec.hub_id, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"weights '{file}' do not fit '{spec.hub_id}': {_one_line(e)}") from None


# ---------------------------------------------------------------------------------------------------------------
# transformers bodies (RoBERTa and any BERT-family folder)
# ---------------------------------------------------------------------------------------------------------------


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
            return _load_hf_folder(Path(weights), dropout, pretrained)
        weights = _weights_file(Path(weights)) or weights       # a folder holding only the weights file
    if weights is not None and not Path(weights).is_file():
        raise BackboneError(f"weights '{weights}' for '{spec.name}' not found: pass a save_pretrained folder "
                            f"or a model.safetensors / pytorch_model.bin file")
    if weights is None and pretrained and not tiny:
        offline = _hub_offline()
        try:
            return cls.from_pretrained(spec.hub_id, local_files_only=offline, **_hf_kwargs(dropout))
        except Exception as e:  # noqa: BLE001
            raise _hub_error(spec, "hub unreachable (offline) and not in the local cache" if offline
                             else _one_line(e)) from None
    lib = cls(transformers.RobertaConfig(**(spec.tiny if tiny else spec.config), **_hf_kwargs(dropout)))
    if weights is not None and pretrained:        # a single state-dict file in RobertaForMaskedLM's key names
        w = Path(weights)
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


def _load_hf_folder(folder: Path, dropout, pretrained: bool = True) -> nn.Module:
    """Any BERT-family folder: AutoModelForMaskedLM if the checkpoint is an MLM one, else AutoModel (no head).
    pretrained=False: the folder's config only (AutoConfig), transformers' own init in float32; tensors not read."""
    import transformers
    try:
        cfg = transformers.AutoConfig.from_pretrained(folder)
        mlm = any(a.endswith("ForMaskedLM") for a in (cfg.architectures or []))
        auto = transformers.AutoModelForMaskedLM if mlm else transformers.AutoModel
        kw = _hf_kwargs(dropout)
        if pretrained:
            return auto.from_pretrained(folder, **kw)
        for k, v in kw.items():                   # the dropout overrides from_pretrained applies to its config
            if k != "attn_implementation":
                setattr(cfg, k, v)
        return auto.from_config(cfg, attn_implementation=kw["attn_implementation"], dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise BackboneError(f"cannot {'load' if pretrained else 'build'} Hugging Face folder '{folder}': "
                            f"{_one_line(e)}") from None


# ---------------------------------------------------------------------------------------------------------------
# One entry point: name or folder -> (library model, its description)
# ---------------------------------------------------------------------------------------------------------------


def load_library_model(name_or_path: str, registry: dict, *, tiny: bool, pretrained: bool, weights: str | None,
                       drop_path_rate: float | None, dropout: float | None) -> tuple[nn.Module, str, str, str | None,
                                                                                      bool]:
    """The unwrapped timm / transformers model for backbones.build_backbone (same arguments; see its docstring);
    `registry` is backbones.BACKBONES (name -> BackboneSpec).

    Returns (library_model, library "timm" | "transformers", name, hub_id, tiny). Raises BackboneError (one line).
    """
    # timm's `drop_rate` is only the classifier-head dropout; HF's hidden dropout is timm's proj_drop_rate
    timm_kw = {k: v for k, v in dict(drop_path_rate=drop_path_rate, proj_drop_rate=dropout,
                                     attn_drop_rate=dropout).items() if v is not None}
    if name_or_path in registry:
        spec = registry[name_or_path]
        if spec.library == "timm":
            return _build_timm(spec, tiny, pretrained, weights, timm_kw), "timm", spec.name, spec.hub_id, tiny
        if drop_path_rate:
            raise BackboneError(f"'{spec.name}' has no stochastic depth: pass drop_path_rate=None or 0")
        lib = _build_hf(spec, tiny, pretrained, weights, dropout)
        return lib, "transformers", spec.name, spec.hub_id, tiny
    path = Path(name_or_path)
    if not path.exists():
        raise BackboneError(f"unknown backbone '{name_or_path}': expected one of {sorted(registry)} or an existing "
                            f"local folder with config.json (from save_backbone / save_pretrained)")
    if weights is not None:
        raise BackboneError(f"weights= is only for BACKBONES names ({sorted(registry)}); '{name_or_path}' is a "
                            f"path, pass the weights folder itself as name_or_path")
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise BackboneError(f"'{path}' is not a folder with config.json: pass a folder from save_backbone or "
                            f"save_pretrained, or a BACKBONES name with weights='{path}'")
    try:
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise BackboneError(f"cannot read the json files in '{path}': {_one_line(e)}") from None
    name, is_tiny, hub_id = meta.get("name", str(path)), bool(meta.get("tiny", False)), meta.get("hub_id")
    if "architecture" in cfg:                                     # timm folder (save_for_hf format)
        return _timm_from_folder(path, timm_kw, pretrained), "timm", name, hub_id, is_tiny
    if "model_type" in cfg:                                       # transformers folder
        if drop_path_rate:
            raise BackboneError(f"'{path}' is a BERT-family encoder without stochastic depth: drop_path_rate=None")
        return _load_hf_folder(path, dropout, pretrained), "transformers", name, hub_id, is_tiny
    raise BackboneError(f"'{path / 'config.json'}' has neither 'architecture' (timm) nor 'model_type' "
                        f"(transformers): not a backbone folder")
