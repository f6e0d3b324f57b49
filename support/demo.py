"""support/demo.py: the tiny source body of `train.py --demo`, pretrained for a few seconds so that the methods differ.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. Every method of Table 2 but Train-from-scratch starts from pretrained source weights θ^S_0
(§2.1); MoNA's stage 1 aligns the target embedder with the knowledge those weights hold (§3). A tiny body
with random weights has no such knowledge: under --demo, Train-from-scratch and Finetuning were the same run,
and MoNA's meta term had nothing to align with. This module gives the demo a tiny body that really was
pretrained, on the synthetic stand-in of its source modality, with a linear classification head on the body's
readout, and caches it on disk so that only the first demo run pays for it. The stand-in is the demo's source
of readers/primitives.py (CIFAR-10-like images of two 8 x 8 patterns per class for 2D bodies, CoNLL-2003-like
ids from two vocabulary bands per class for 1D bodies): the demo's target tasks are made of the same primitives
in another form, so the body's knowledge can transfer (version 1 pretrained on data that shared nothing with the
target, and a random body did as well as the pretrained one). The tiny Swin is built at 32 px, the size of the
demo's images (`TINY_KWARGS`; `--tiny` alone keeps backbones.py's 64 px), a quarter of the tokens.

Paper map
---------
| paper                                           | here                                                   |
|-------------------------------------------------|--------------------------------------------------------|
| θ^S_0 = {θ^S_e0, θ^S_f0}: source pretraining    | `pretrain`: source embedder + encoder + a linear head, |
|   on the source modality (§2.1, §2.2)           |   cross-entropy on the synthetic source (x^s, y^s)     |
| the source surrogate {x_i^s, y_i^s} (App. A.6)  | data.load_source_surrogate(synthetic=True), seed 0     |
| a published checkpoint                          | `demo_body`: a folder of backbones.save_backbone,      |
|                                                 |   cached (atomic rename), the same for every --seed    |

| symbol          | code name                          | shape                                   |
|-----------------|------------------------------------|-----------------------------------------|
| x^s, y^s        | `xs`, `ys`                         | (B, 3, 32, 32) float or (B, 32) ids; (B,) |
| readout(f(e^S)) | `source.pooled_features(xs, mask)` | (B, d)                                  |
| head (dropped)  | `head`                             | Linear(d, K_s)                          |

The body is the same for every --seed of the demo, as a published checkpoint is the same for every
fine-tuning seed. The library's own head θ^S_h0 (Swin's classifier, RoBERTa's MLM head) keeps its random
initialisation: nothing in train.py reads it. The cache lives in the system's temporary folder, keyed by body,
recipe and version; a missing or removed folder is rebuilt; several processes may build it at once (each
writes a private folder, the first rename wins, the others keep the winner's).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time

import torch

VERSION = 2                 # bump when the recipe changes: the cache key changes with it (2: readers/primitives.py)
# AdamW steps × batch per modality (seconds on one CPU core, once): train accuracy over the last 10 batches is
# recorded in demo_body.json and printed by every demo run
RECIPE = {"2d": dict(steps=600, batch_size=32), "1d": dict(steps=300, batch_size=32)}
COMMON = dict(lr=1e-3, samples=2000, seed=0)
TINY_KWARGS = {"swin_base": dict(img_size=32)}     # the demo's tiny Swin sees 32 x 32 images without resizing
SOURCES = {"2d": ("cifar10", "CIFAR-10"), "1d": ("conll2003", "CoNLL-2003")}
INFO_FILE = "demo_body.json"


def cache_root() -> str:
    """Where demo bodies are cached: <system temp>/mona-demo-bodies-<uid> (one per user)."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"mona-demo-bodies-{uid}")


def pretrain(name: str, steps: int, batch_size: int, lr: float, samples: int, seed: int):
    """A tiny `name` body (BACKBONES spec, random init) trained `steps` AdamW steps with a linear head on its
    readout to classify the synthetic source of its modality. Returns (source, stats)."""
    import backbones
    import data
    from stage1 import source_mask
    torch.manual_seed(seed)
    source = backbones.build_backbone(name, tiny=True, tiny_kwargs=TINY_KWARGS.get(name))
    kind = SOURCES[source.modality][0]
    vocab = (int(source.source_embedder.embeddings.word_embeddings.num_embeddings) if source.modality == "1d"
             else 1000)
    ds = data.load_source_surrogate(kind, synthetic=True, demo=True, seed=seed, vocab_size=vocab,
                                    n_synthetic=samples, max_samples=samples)
    xs_all, ys_all = zip(*(ds[i] for i in range(len(ds))))
    xs_all, ys_all = torch.stack(xs_all), torch.stack(ys_all)
    head = torch.nn.Linear(source.feature_dim, int(ys_all.max()) + 1)
    opt = torch.optim.AdamW([*source.parameters(), *head.parameters()], lr=lr)
    g = torch.Generator().manual_seed(seed)
    source.train()
    t0, correct, seen = time.time(), 0, 0
    for step in range(steps):
        idx = torch.randint(len(xs_all), (batch_size,), generator=g)
        xs, ys = xs_all[idx], ys_all[idx]
        mask = source_mask(ds, xs)                                      # (B, T) real tokens, or None (images)
        logits = head(source.pooled_features(xs, mask))                 # (B, K_s)
        loss = torch.nn.functional.cross_entropy(logits, ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - 10:                                          # accuracy over the last 10 batches
            correct, seen = correct + int((logits.argmax(1) == ys).sum()), seen + len(ys)
    source.eval()
    return source, dict(steps=steps, source=kind, train_accuracy=correct / max(seen, 1),
                        final_loss=loss.item(), seconds=round(time.time() - t0, 2))


def demo_body(name: str, *, cache: str | None = None, **recipe) -> str:
    """The folder of the pretrained tiny `name` body (build_backbone(folder) or weights=folder), built on the
    first call and cached. `recipe` overrides RECIPE (tests: fewer steps)."""
    import backbones
    r = {**COMMON, **RECIPE[backbones.BACKBONES[name].modality], **recipe}
    root = cache or cache_root()
    folder = os.path.join(root, f"{name}-tiny-v{VERSION}-{r['steps']}steps-seed{r['seed']}")
    if os.path.isfile(os.path.join(folder, INFO_FILE)):
        return folder
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", dir=root)     # private to this process
    try:
        source, stats = pretrain(name, **r)
        with contextlib.redirect_stderr(io.StringIO()):             # the libraries' "Writing shards" bars
            backbones.save_backbone(source, tmp)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:          # written last: marks a complete folder
            json.dump(dict(stats, name=name, recipe=r, version=VERSION), f, indent=2)
        try:
            os.rename(tmp, folder)                                  # atomic; fails if another writer won
        except OSError:
            if not os.path.isfile(os.path.join(folder, INFO_FILE)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)                      # gone after a successful rename
    return folder


def describe(folder: str) -> str:
    """The demo's one line: what the body is and what the numbers mean."""
    with open(os.path.join(folder, INFO_FILE)) as f:
        info = json.load(f)
    return (f"demo: tiny {info['name']} body pretrained for {info['steps']} steps on a synthetic "
            f"{dict(SOURCES.values())[info['source']]} stand-in (train accuracy {100 * info['train_accuracy']:.0f}%, "
            f"cached in {folder}); synthetic task data made of the same primitives in another form "
            f"(readers/primitives.py), so that transfer can help; the numbers show the pipeline and how the methods "
            f"compare on this toy, not the paper's results")
