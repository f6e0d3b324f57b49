"""Distortion of the source knowledge: linear probing, Davies-Bouldin index, t-SNE (§2.2, Fig. 2, Fig. 3).

Paper: "Learning Modality Knowledge Alignment for Cross-Modality Transfer", Ma et al., ICML 2024,
arXiv 2406.18864. Paper map: §2.2 (distortion of the source knowledge) -> `probe_models`; Fig. 3 (linear
probing) -> `linear_probe_error`, `bar_chart`; Fig. 2 (t-SNE, DB index) -> `tsne_plot`, `davies_bouldin`.
The source surrogate (CIFAR-10 for the image source, unseen by the pretrained
model) is encoded by the pretrained encoder and by encoders fine-tuned on target tasks; the less a
fine-tuned encoder separates the surrogate's classes, the more source knowledge was distorted.
  Fig. 2: t-SNE of the surrogate features, Davies-Bouldin (DB) index in the upper-right corner.
  Fig. 3: linear-probe error on the surrogate, one bar per fine-tuned encoder, a dashed line for the
          pretrained encoder ("Pretrained").

Protocol (ours; the paper gives none): the probe is trained on the features of the surrogate's TRAIN split
(CIFAR-10 data_batch_1..5 / CoNLL-2003 eng.train, data.load_source_surrogate(split="train"), the samples the
stage-1 outer loss uses) and its error is reported on the features of the TEST split (CIFAR-10 test_batch /
CoNLL-2003 eng.testb, split="test"). The DB index and the t-SNE pictures use the test-split features.
CIFAR-10's train split carries data.py's once-drawn crop/flip (as the outer loss sees it); the test split none.

Paper symbol -> code name -> shape
  {x^s_i, y^s_i}                         surrogate train / test split (data.load_source_surrogate)  (n, 3, 32, 32), (n,)
  f^s_i = readout f(e(x^s_i; θ^S_e0); θ^S_f0)  extract_features(source, ds) (pretrained encoder)  (n, d)
  f^s_i(M_t) = f(e(x^s_i; θ^S_e0); θ^T_f) the same after load_encoder(ckpt) swaps in θ^T_f   (n, d)
  DB index (Fig. 2)                      davies_bouldin(feats, labels)                        float
  linear probing error (Fig. 3)          linear_probe_error(...)                              percent

Encoder features are (B, N', d) tokens; we pool them with the body's one readout `source.readout` (the paper
does not say how it pools; it is what the classification head of App. A.2 uses: the mean over (real) tokens for
Swin and BERT-family bodies; a padded CoNLL-2003 batch passes its attention mask).
Core functions need numpy + scikit-learn; matplotlib is imported only where a picture is drawn (Agg canvas,
no pyplot state); torch and the sibling modules only in the feature extraction and the command line
(`python probe.py --checkpoint A.pt B.pt ...`: `get_parser`, `main`). The command line uses argparse like
train.py, imported inside those two functions only (library functions take explicit arguments), and takes the
options it shares with train.py and discrepancy.py from support/cli.py; checkpoints are read by
runtime.load_checkpoint and discrepancy.load_prefixed (one reader for both analyses).

The pretrained reference and each checkpoint are rebuilt with torch.manual_seed(config seed) first, as
train.py does, so tiny random-initialised bodies (tests, --tiny) get the same θ^S_e0 as in training.
"""
from __future__ import annotations

import os
import sys

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# constants

PROBE_C = 1.0  # inverse L2 strength of the logistic regression (scikit-learn default)
PROBE_MAX_ITER = 2000  # lbfgs iterations (multinomial softmax regression)
MAX_SAMPLES = 5000  # surrogate samples encoded per split (train, test) and per model
TSNE_PERPLEXITY = 30.0  # scikit-learn's default; lowered to (n - 1) / 3 on small sets
TSNE_EXACT_MAX = 500  # exact O(n^2) t-SNE up to this many samples (steady on busy CPUs), Barnes-Hut above


class ProbeError(ValueError):
    """Bad input to the probes or their command line; the message is one line."""


def _check_xy(feats, labels, what):
    X = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ProbeError(f"{what}: expected features (n, d) and labels (n,); got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ProbeError(f"{what}: features contain NaN or inf")
    return X, y


# ---------------------------------------------------------------------------------------------------------
# the measures (Fig. 3 and Fig. 2)


def linear_probe_error(train_feats, train_labels, test_feats, test_labels, *, C=PROBE_C, max_iter=PROBE_MAX_ITER):
    """Linear-probe error in percent (Fig. 3): a softmax regression on frozen features.

    Features are standardised with the training statistics (StandardScaler), then scikit-learn's
    LogisticRegression (lbfgs, multinomial, L2 with C=1.0, max_iter=2000) is fit on the training set;
    returns 100 * (1 - accuracy on the test set). The paper gives no probe settings; probe_models passes the
    surrogate's train-split features for training and its test-split features for the error.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, ytr = _check_xy(train_feats, train_labels, "linear_probe_error (train)")
    Xte, yte = _check_xy(test_feats, test_labels, "linear_probe_error (test)")
    if Xtr.shape[1] != Xte.shape[1]:
        raise ProbeError(f"linear_probe_error: train features have d={Xtr.shape[1]}, test d={Xte.shape[1]}")
    if len(np.unique(ytr)) < 2:
        raise ProbeError("linear_probe_error: the training labels hold a single class; use more samples")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings():  # a not-quite-converged probe is still a probe; keep the table clean
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(Xtr, ytr)
    # error (%) = 100 * (1 - (1/n) Σ_i 1[ŷ_i = y_i])
    return float(100.0 * (1.0 - np.mean(probe.predict(Xte) == yte)))


def davies_bouldin(feats, labels):
    """Davies-Bouldin index of the features grouped by label (Fig. 2; smaller = better clustered).

    DB = (1/K) Σ_k max_{l≠k} (s_k + s_l) / ||c_k - c_l||, s_k the mean distance to centroid c_k
    (scikit-learn's davies_bouldin_score). Needs 2 <= K < n.
    """
    from sklearn.metrics import davies_bouldin_score

    X, y = _check_xy(feats, labels, "davies_bouldin")
    K = len(np.unique(y))
    if not 2 <= K < len(y):
        raise ProbeError(f"davies_bouldin: needs 2 <= number of classes < n; got {K} classes, n = {len(y)}")
    return float(davies_bouldin_score(X, y))


# ---------------------------------------------------------------------------------------------------------
# pictures (matplotlib, Agg canvas)


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # draw with Agg: no display, no pyplot global state
    return fig


def tsne_plot(feats, labels, path, title=None, *, seed=0, perplexity=None, db=None):
    """Fig. 2 panel: 2-D t-SNE of the features coloured by label, DB index in the upper-right corner.

    The DB index is computed on the features themselves (not on the 2-D map; the paper does not say which)
    unless `db` is given. perplexity defaults to min(30, (n - 1) / 3); exact t-SNE up to 500 samples,
    Barnes-Hut above. Writes a PNG; returns the (n, 2) map.
    """
    from sklearn.manifold import TSNE

    X, y = _check_xy(feats, labels, "tsne_plot")
    n = len(y)
    if n < 4:
        raise ProbeError(f"tsne_plot: t-SNE needs at least 4 samples; got {n}")
    db = davies_bouldin(X, y) if db is None else float(db)
    perplexity = min(TSNE_PERPLEXITY, (n - 1) / 3.0) if perplexity is None else float(perplexity)
    method = "exact" if n <= TSNE_EXACT_MAX else "barnes_hut"
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
               method=method).fit_transform(X)  # (n, 2)
    fig = _figure((4.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap="tab10", s=4, linewidths=0)
    ax.text(0.98, 0.98, f"DB={db:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=11,
            bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=150)
    return emb


def bar_chart(names, errors, path, reference=None, *, title=None,
              ylabel="linear-probe error (%)"):
    """Fig. 3: one bar per encoder (error in %), a dashed horizontal line at `reference` ("Pretrained")."""
    names, errors = list(names), [float(e) for e in errors]
    if len(names) != len(errors) or not names:
        raise ProbeError(f"bar_chart: needs as many names as errors (>= 1); got {len(names)} and {len(errors)}")
    fig = _figure((max(4.0, 0.8 * len(names) + 2.0), 3.5))
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(len(names)), errors, color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if reference is not None:
        ax.axhline(float(reference), color="black", linestyle="--", linewidth=1.2, label="Pretrained")
        ax.legend(loc="upper left")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=150)


# ---------------------------------------------------------------------------------------------------------
# features of the source surrogate (torch and the sibling modules load here)


def extract_features(source, dataset, *, batch_size=64, max_samples=None, device=None):
    """f^s_i = readout(f(e(x^s_i; θ^S_e0); θ_f)) -> (features (n, d) float32, labels (n,) int64).

    `source` is a backbones.SourceModel: its source_embedder (θ^S_e0, always the pretrained one), whatever
    encoder it holds (θ^S_f0, or θ^T_f after load_encoder) and its one readout `source.readout` (the pooled
    feature of the classification head: masked mean over real tokens for Swin / BERT-family, the documented
    choice for ViT/CLIP). A padded text surrogate (`dataset.pad_id`) passes the attention mask ids != pad_id.
    """
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source.to(device).eval()
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    from stage1 import source_mask
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            mask = source_mask(dataset, x)  # (B, T) 1 = real token; images: None
            feats.append(source.pooled_features(x, mask).float().cpu().numpy())  # (B, d) the body's pooled feature
            labels.append(np.asarray(y).reshape(len(x)))
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64)


def load_encoder(source, checkpoint):
    """Put the encoder θ^T_f of a train.py checkpoint ("encoder.*" keys of ckpt["model"]) into source.encoder.

    Returns the checkpoint's config dict. ProbeError (one line) when the file is missing, foreign, or its
    tensors do not fit (another backbone / tiny setting).
    """
    import discrepancy
    from support import runtime

    try:
        ckpt = runtime.load_checkpoint(checkpoint)
        discrepancy.load_prefixed(source.encoder, ckpt["model"], "encoder.", checkpoint)
    except discrepancy.DiscrepancyError as e:
        raise ProbeError(str(e)) from None
    return ckpt["config"]


def _surrogates(source, data_dir, synthetic, max_samples, seed, weights):
    """(train split, test split) of CIFAR-10 for a 2D body, CoNLL-2003 for a 1D body (data.load_source_surrogate)."""
    import data

    name = "cifar10" if source.modality == "2d" else "conll2003"
    kw = dict(synthetic=synthetic, max_samples=max_samples, seed=seed)
    if name == "conll2003":
        emb = getattr(source.source_embedder, "word_embeddings", None)
        if synthetic:
            kw["vocab_size"] = int(emb.num_embeddings) if emb is not None else 1000
        else:
            from transformers import AutoTokenizer

            try:
                kw["tokenizer"] = AutoTokenizer.from_pretrained(weights or source.hub_id or source.name)
            except Exception as e:  # noqa: BLE001 - offline / missing files
                raise ProbeError(f"cannot load the tokenizer of {source.hub_id or source.name!r} "
                                 f"({type(e).__name__}); pass a local folder with --weights or use "
                                 f"--synthetic-data") from None
    return tuple(data.load_source_surrogate(name, data_dir, split=split, **kw) for split in ("train", "test"))


def _build_source(backbone, tiny, weights, seed):
    import torch

    import backbones

    torch.manual_seed(seed)  # train.py seeds before building: the same tiny random θ^S_e0 as in training
    return backbones.build_backbone(backbone, tiny=tiny, weights=weights)


def probe_models(checkpoints=(), backbone=None, *, tiny=False, weights=None, data_dir=None, synthetic=False,
                 max_samples=MAX_SAMPLES, seed=0, out=None, tsne=True, batch_size=64):
    """The §2.2 experiment: probe error and DB index of the pretrained encoder and of each checkpoint's encoder.

    For each encoder: features of the surrogate's train split (max_samples) fit the probe, features of its
    test split (max_samples) give the error, the DB index and the t-SNE picture.
    Returns rows [{"name", "checkpoint", "error", "db", "tsne"}] (first row "pretrained"); writes t-SNE PNGs
    to `out` and, for several checkpoints, the Fig. 3 bar chart out/linear_probe.png.
    """
    import discrepancy
    from support import runtime

    configs = []
    for path in checkpoints:
        try:
            configs.append(runtime.load_checkpoint(path)["config"])
        except discrepancy.DiscrepancyError as e:
            raise ProbeError(str(e)) from None
    bodies = {}                                  # one "Pretrained" reference belongs to one source body
    for path, cfg in zip(checkpoints, configs):
        bodies.setdefault((cfg.get("backbone"), bool(cfg.get("tiny")), cfg.get("weights")), []).append(path)
    if len(bodies) > 1:
        listed = "; ".join(f"{b[0]}{' (tiny)' if b[1] else ''}{' from ' + b[2] if b[2] else ''}: "
                           f"{', '.join(os.path.basename(p) for p in ps)}" for b, ps in bodies.items())
        raise ProbeError(f"the checkpoints come from different source bodies ({listed}); the pretrained reference "
                         "and the probe's surrogate belong to one body: run probe.py once per body")
    first = configs[0] if configs else {}
    backbone = backbone or first.get("backbone") or "swin_base"
    tiny = bool(tiny or first.get("tiny", False))
    weights = weights or first.get("weights")
    models = [("pretrained", None, dict(backbone=backbone, tiny=tiny, weights=weights, seed=first.get("seed", seed)))]
    def run_name(path, cfg):  # "<task>-<method>" as train.py names its --out folder, else the folder name
        if cfg.get("task") and cfg.get("method"):
            return f"{cfg['task']}-{cfg['method']}"
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or "checkpoint"

    runs = [run_name(p, c) for p, c in zip(checkpoints, configs)]
    used = {"pretrained"}
    for path, cfg, run in zip(checkpoints, configs, runs):
        stem = os.path.splitext(os.path.basename(path))[0]
        name = run if runs.count(run) == 1 else f"{run}-{stem}"  # last.pt and stage1_embedder.pt of one run
        base, k = name, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        models.append((name, path, dict(backbone=cfg.get("backbone") or backbone,
                                        tiny=bool(cfg.get("tiny", tiny)), weights=cfg.get("weights") or weights,
                                        seed=cfg.get("seed", seed))))
    rows, surrogate = [], {}
    for name, path, b in models:
        source = _build_source(b["backbone"], b["tiny"], b["weights"], b["seed"])
        if path is not None:
            load_encoder(source, path)  # θ^T_f of the fine-tuned model; θ^S_e0 stays the pretrained one
        key = (source.modality, b["backbone"], b["tiny"])
        if key not in surrogate:
            surrogate[key] = _surrogates(source, data_dir, synthetic, max_samples, seed, b["weights"])
        train_ds, test_ds = surrogate[key]
        X_tr, y_tr = extract_features(source, train_ds, batch_size=batch_size, max_samples=max_samples)  # (n, d)
        X_te, y_te = extract_features(source, test_ds, batch_size=batch_size, max_samples=max_samples)  # (m, d)
        row = dict(name=name, checkpoint=path, error=linear_probe_error(X_tr, y_tr, X_te, y_te),
                   db=davies_bouldin(X_te, y_te), tsne=None)  # Fig. 3 error and Fig. 2 DB on the test split
        if out and tsne:
            row["tsne"] = os.path.join(out, f"tsne_{name.replace('/', '_')}.png")
            tsne_plot(X_te, y_te, row["tsne"], title=name, seed=seed, db=row["db"])
        rows.append(row)
    if out and len(checkpoints) >= 2:
        bar_chart([r["name"] for r in rows[1:]], [r["error"] for r in rows[1:]],
                  os.path.join(out, "linear_probe.png"), reference=rows[0]["error"])
    return rows


# ---------------------------------------------------------------------------------------------------------
# command line

def get_parser() -> argparse.ArgumentParser:
    """The command line of the §2.2 experiment (argparse, imported here only). The options shared with
    train.py and discrepancy.py come from support/cli.py (one declaration)."""
    import argparse

    from support import cli

    p = argparse.ArgumentParser(
        prog="probe.py",
        description="Distortion of the source knowledge (§2.2): linear-probe error (Fig. 3) and Davies-Bouldin "
                    "index / t-SNE (Fig. 2) of source-surrogate features f(e(x^s; θ^S_e0); θ_f) for the pretrained "
                    "encoder θ^S_f0 and each checkpoint's fine-tuned encoder θ^T_f. The probe trains on the "
                    "surrogate's train split and is scored on its test split; DB and t-SNE use the test split.")
    g = p.add_argument_group("what to probe")
    g.add_argument("--checkpoint", nargs="+", action="extend", default=None, metavar="CKPT",
                   help="one or more train.py checkpoints (last.pt / best.pt): probe their encoders θ^T_f "
                        "(one Fig. 3 bar each)")
    g.add_argument("--max-samples", metavar="N", type=cli.pos_int, default=MAX_SAMPLES,
                   help="surrogate samples {x^s_i, y^s_i} per split and per model: the probe trains on this many "
                        "train-split samples and is scored on this many test-split samples (default: %(default)s)")
    cli.add_shared_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default="runs/probe",
                   help="output folder for the t-SNE PNGs and the bar chart (default: %(default)s)")
    g.add_argument("--no-tsne", action="store_true", help="skip the t-SNE pictures (slow on thousands of samples)")
    g.add_argument("--batch-size", metavar="N", type=cli.pos_int, default=64,
                   help="batch size of the feature extraction (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (transformers' weight-loading bars included; off too when stderr is "
                        "not a terminal)")
    return p


def main(argv=None) -> int:
    """python probe.py [--checkpoint CKPT ...]: table of probe error and DB index (Fig. 3), t-SNE PNGs (Fig. 2).

    Usage mistakes exit 2 with argparse's usage line; expected mistakes (missing files, a bad checkpoint, ...)
    print one line "error: ..." and return 2.
    """
    import discrepancy
    from support import cli, runtime

    args = get_parser().parse_args(argv)  # argparse: usage + one line, exit 2
    runtime.quiet_libraries({"main": True}, {"no_progress": args.no_progress})
    try:
        rows = probe_models(args.checkpoint or (), args.backbone, tiny=args.tiny, weights=args.weights,
                            data_dir=args.data_dir, synthetic=args.synthetic_data, max_samples=args.max_samples,
                            seed=args.seed, out=args.out, tsne=not args.no_tsne, batch_size=args.batch_size)
    except cli.expected_errors(ProbeError, discrepancy.DiscrepancyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    width = max(len(r["name"]) for r in rows)
    print(f"{'encoder':<{width}}  probe error (%)  DB index")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['error']:15.2f}  {r['db']:8.3f}")
    pictures = [r["tsne"] for r in rows if r["tsne"]]
    if len(rows) > 2:
        pictures.append(os.path.join(args.out, "linear_probe.png"))
    if pictures:
        print("wrote " + ", ".join(pictures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
