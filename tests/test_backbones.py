"""Tests for backbones.py: the source model θ^S_0 = {θ^S_e0, θ^S_f0, θ^S_h0} (arXiv 2406.18864 §2.1, App. A.2).

Oracles: the libraries' own forward (timm `model(x)`, transformers `model(input_ids).logits`), including models
that timm / transformers load on their own from our saved folders; torchvision's Resize; RoBERTa's/BERT's
embedding formula; float64 central finite differences of a one-step bilevel objective (the MoNA meta-gradient
through θ_f* = θ_f − α∇L). Tiny random-init configurations only, no network.
"""
import math
import os
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import backbones  # noqa: E402
from backbones import BACKBONES, BackboneError, build_backbone, save_backbone  # noqa: E402

FAMILIES = ["swin_base", "vit_base", "clip_vit_b16", "roberta_base"]
ATOL = 1e-5


def _raw_input(source, B=2, T=12, seed=0, dtype=torch.float32):
    """A raw source input: images at image_size, or input_ids without the padding id (RoBERTa pad = 1)."""
    g = torch.Generator().manual_seed(seed)
    if source.modality == "2d":
        return torch.randn(B, 3, source.image_size, source.image_size, generator=g, dtype=dtype)
    return torch.randint(3, source.library_model.config.vocab_size, (B, T), generator=g)


def _library_logits(lib, x):
    out = lib(x)
    return out if torch.is_tensor(out) else out.logits


def _independent_load(folder, family):
    """The library alone loads our saved folder (no backbones.py code involved)."""
    if family == "roberta_base":
        import transformers
        return transformers.RobertaForMaskedLM.from_pretrained(folder).eval()
    import timm
    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()   # default (possibly fused) attention


# ------------------------------------------------------------------------------------------------------------
# forward == library forward; shapes; save -> load by path
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_forward_matches_library_and_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    src = build_backbone(name, tiny=True).eval()
    assert src.name == name and src.tiny and src.modality == BACKBONES[name].modality
    x = _raw_input(src)
    with torch.no_grad():
        ref = _library_logits(src.library_model, x)          # oracle: timm model(x) / HF model(ids).logits
        z = src(x)
        tokens = src.source_embedder(x)
        f = src.encoder(tokens)
    torch.testing.assert_close(z, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(src.source_features(x), f)

    # attributes consistent with the tensors
    B = x.shape[0]
    assert tokens.shape[-1] == src.embed_dim and f.shape[-1] == src.feature_dim
    if src.modality == "2d":
        assert tokens.shape == (B, (src.image_size // src.patch_size) ** 2, src.embed_dim)
        assert f.shape == (B, (src.image_size // src.output_stride) ** 2, src.feature_dim)
        assert z.shape == (B, src.num_source_classes) and src.max_tokens is None
        assert src.source_position_table() is None
    else:
        assert tokens.shape == (B, x.shape[1], src.embed_dim) and f.shape == (B, x.shape[1], src.feature_dim)
        assert z.shape == (B, x.shape[1], src.num_source_classes)
        assert src.source_position_table().shape == (src.max_tokens, src.embed_dim) and src.max_tokens == 128
        # the longest accepted sequence runs; one more token does not fit the position table
        ids = torch.randint(3, 1000, (1, src.max_tokens))
        torch.testing.assert_close(src(ids), _library_logits(src.library_model, ids), atol=ATOL, rtol=0)

    # save -> load by path, both through build_backbone and through the library alone
    save_backbone(src, tmp_path / "bb")
    again = build_backbone(str(tmp_path / "bb")).eval()
    assert (again.name, again.tiny, again.modality) == (name, True, src.modality)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(_library_logits(_independent_load(tmp_path / "bb", name), x), ref,
                                   atol=ATOL, rtol=0)
    sd0, sd1 = src.encoder.state_dict(), again.encoder.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)


@pytest.mark.parametrize("name", ["swin_base", "roberta_base"])
def test_weights_file(name, tmp_path):
    """weights= a single state-dict file in the library's key names reproduces the model."""
    torch.manual_seed(1)
    src = build_backbone(name, tiny=True).eval()
    sd = src.library_model.state_dict()
    if name == "swin_base":
        from safetensors.torch import save_file
        path = tmp_path / "model.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "pytorch_model.bin"                   # tied embeddings: torch.save, not safetensors
        torch.save(sd, path)
    x = _raw_input(src, seed=3)
    candidates = [path, tmp_path]                              # the file, and a folder holding only that file
    if name == "swin_base":
        candidates.append(save_backbone(src, tmp_path / "saved"))   # a timm hub-style folder (config.json)
    for w in candidates:
        other = build_backbone(name, tiny=True, weights=str(w)).eval()
        with torch.no_grad():
            torch.testing.assert_close(other(x), src(x), atol=ATOL, rtol=0, msg=str(w))


def test_copies_and_dtype_keep_library_model_in_step():
    """deepcopy / .double() keep the wrappers and the unwrapped library model on the same tensors."""
    import copy
    src = build_backbone("vit_base", tiny=True).eval()
    twin = copy.deepcopy(src)
    with torch.no_grad():
        twin.encoder.pos_embed.add_(1.0)                       # edit θ_f of the copy only
    x = _raw_input(src)
    with torch.no_grad():
        torch.testing.assert_close(src(x), src.library_model(x))
        torch.testing.assert_close(twin(x), twin.library_model(x))
        assert not torch.allclose(twin(x), src(x))
    src.double()
    assert src.library_model.pos_embed.dtype == torch.float64 and src.library_model.pos_embed is src.encoder.pos_embed


def test_2d_embedder_resizes_like_torchvision():
    """CIFAR-sized inputs go straight in: resize (bilinear, antialias) then patchify; no-op at image_size."""
    from torchvision.transforms import functional as TF
    src = build_backbone("swin_base", tiny=True).eval()
    x = torch.randn(2, 3, 32, 32)
    S = src.image_size
    with torch.no_grad():
        torch.testing.assert_close(src.source_embedder(x),
                                   src.source_embedder(TF.resize(x, [S, S], antialias=True)), atol=1e-6, rtol=0)
        y = torch.randn(1, 3, S, S)
        expected = src.library_model.patch_embed(y).flatten(1, 2)       # timm NHWC -> NLC
        torch.testing.assert_close(src.source_embedder(y), expected, atol=0, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_dropout_defaults_match_orca(name):
    """ORCA (src/embedder.py) sets hidden and attention dropout to its configs' drop_out (0 everywhere) but keeps
    Swin's drop_path_rate 0.1. dropout=p must reach every attention and hidden (projection / MLP) dropout of θ_f
    (timm's own `drop_rate` is only the classifier-head dropout, outside θ_f)."""
    from timm.layers import DropPath

    def drops(src):   # every nn.Dropout inside θ_f (timm ViT's pos_drop is its embedding dropout, left alone)
        d = {n: m.p for n, m in src.encoder.named_modules() if isinstance(m, torch.nn.Dropout) and "pos_drop" not in n}
        assert d, "no dropout modules found in the encoder"
        return d

    src = build_backbone(name, tiny=True)
    d = drops(src)
    assert all(p == 0.0 for p in d.values()), {n: p for n, p in d.items() if p}
    if name == "swin_base":   # stochastic depth stays on, linearly up to 0.1 (as in ORCA)
        assert max(m.drop_prob for m in src.encoder.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)
    d = drops(build_backbone(name, tiny=True, dropout=0.25))
    assert all(p == 0.25 for p in d.values()), {n: p for n, p in d.items() if p != 0.25}
    assert build_backbone(name, tiny=True, dropout=None).modality == src.modality   # None: library default


# ------------------------------------------------------------------------------------------------------------
# 1D: position table alignment, any Hugging Face encoder folder
# ------------------------------------------------------------------------------------------------------------
def _tiny_hf(kind):
    import transformers as tr
    common = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=130, attn_implementation="eager")
    if kind == "bert_mlm":
        return tr.BertForMaskedLM(tr.BertConfig(**common))
    if kind == "bert_body":
        return tr.BertModel(tr.BertConfig(**common), add_pooling_layer=False)
    return tr.ElectraForMaskedLM(tr.ElectraConfig(embedding_size=32, **common))   # embeddings_project 32 -> 64


def _embedding_formula(emb, ids, table):
    """Oracle: LayerNorm(word[ids] + token_type[0] + position rows 0..T-1 of the aligned table)."""
    e = emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0] + table[: ids.shape[1]]
    return emb.LayerNorm(e)


@pytest.mark.parametrize("kind", ["roberta", "bert_mlm"])
def test_position_table_alignment(kind, tmp_path):
    if kind == "roberta":
        src, offset = build_backbone("roberta_base", tiny=True).eval(), 2   # padding_idx + 1 rows skipped
    else:
        _tiny_hf(kind).save_pretrained(tmp_path / "bert")
        src, offset = build_backbone(str(tmp_path / "bert")).eval(), 0
    table = src.source_position_table()
    emb = src.source_embedder.embeddings
    assert src.max_tokens == 130 - offset and table.shape == (src.max_tokens, src.embed_dim)
    torch.testing.assert_close(table, emb.position_embeddings.weight[offset:])
    ids = torch.randint(3, 1000, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(src.source_embedder(ids), _embedding_formula(emb, ids, table))


@pytest.mark.parametrize("kind", ["bert_mlm", "bert_body", "electra_mlm"])
def test_any_hf_encoder_folder(kind, tmp_path):
    torch.manual_seed(2)
    lib = _tiny_hf(kind).eval()
    lib.save_pretrained(tmp_path / kind)
    src = build_backbone(str(tmp_path / kind)).eval()
    ids = torch.randint(3, 1000, (2, 11))
    with torch.no_grad():
        hidden = (lib if kind == "bert_body" else lib.base_model)(ids).last_hidden_state
        torch.testing.assert_close(src.source_features(ids), hidden, atol=ATOL, rtol=0)
        if kind == "bert_mlm":
            torch.testing.assert_close(src(ids), lib(ids).logits, atol=ATOL, rtol=0)
            assert src.num_source_classes == 1000
        else:   # no checkpoint head (body only) or a head split over several modules (ELECTRA): documented None
            assert src.source_head is None
            with pytest.raises(BackboneError):
                src(ids)
    if kind == "electra_mlm":
        assert src.embed_dim == 32 and src.feature_dim == 64


# ------------------------------------------------------------------------------------------------------------
# Double backward: the MoNA one-step virtual update through the encoder, float64, vs finite differences
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_double_backward_meta_gradient(name):
    torch.manual_seed(0)
    src = build_backbone(name, tiny=True).double().eval()
    enc = src.encoder
    with torch.no_grad():
        tok_t = src.source_embedder(_raw_input(src, seed=1, dtype=torch.float64))   # "target" tokens (B, N, D)
        tok_s = src.source_embedder(_raw_input(src, seed=2, dtype=torch.float64))   # frozen source tokens
    theta = {k: p.detach().requires_grad_() for k, p in enc.named_parameters()}

    # (a) functional_call reaches every θ_f tensor (no hidden copies) and agrees with the module's own backward
    out = functional_call(enc, theta, (tok_t,))
    grads = torch.autograd.grad(out.pow(2).mean(), list(theta.values()))      # errors if any tensor is unused
    enc.zero_grad()
    enc(tok_t).pow(2).mean().backward()
    for (k, p), g in zip(enc.named_parameters(), grads):
        torch.testing.assert_close(g, p.grad, msg=k)

    # (b) F(c) = L_in(θ, c) + λ L_out(θ − α ∇_θ L_in(θ, c)), c a learnable token scale (a stand-in for φ_e)
    d = src.feature_dim
    W = torch.randn(d, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = torch.arange(tok_t.shape[0]) % 3
    alpha, lam = 0.5, 1.0

    def l_in(th, c):
        return F.cross_entropy(functional_call(enc, th, (tok_t * c,)).mean(1) @ W, y)

    def l_out(th):
        return functional_call(enc, th, (tok_s,)).mean(1).pow(2).mean()

    def objective(c, create_graph):
        li = l_in(theta, c)
        g = torch.autograd.grad(li, list(theta.values()), create_graph=create_graph)
        # Eq. (6): θ_f* = θ_f − α ∇_θf L_in, a new dict (nothing in place)
        theta_star = {k: p - alpha * gk for (k, p), gk in zip(theta.items(), g)}
        return li + lam * l_out(theta_star)

    c = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    (g_meta,) = torch.autograd.grad(objective(c, True), c)
    (g_first,) = torch.autograd.grad(l_in(theta, c), c)
    eps = 1e-5
    g_fd = (objective(c.detach() + eps, False) - objective(c.detach() - eps, False)) / (2 * eps)
    assert torch.isfinite(g_meta)
    meta_term = (g_meta - g_first).abs().item()
    assert meta_term > 1e-6 * max(1.0, g_first.abs().item()), "meta-term vanished: first-order by accident"
    assert math.isclose(g_meta.item(), g_fd.item(), rel_tol=1e-5, abs_tol=1e-9), (g_meta.item(), g_fd.item())


# ------------------------------------------------------------------------------------------------------------
# Errors: one line, named, fast offline
# ------------------------------------------------------------------------------------------------------------
def _one_line_error(fn, *needles):
    with pytest.raises(BackboneError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_errors_unknown_name_and_missing_files(tmp_path):
    _one_line_error(lambda: build_backbone("swin_huge"), "swin_huge", "swin_base")
    _one_line_error(lambda: build_backbone(str(tmp_path / "nowhere")), "nowhere")
    (tmp_path / "empty").mkdir()
    _one_line_error(lambda: build_backbone(str(tmp_path / "empty")), "config.json")
    missing = str(tmp_path / "model.safetensors")
    _one_line_error(lambda: build_backbone("swin_base", tiny=True, weights=missing), missing)
    _one_line_error(lambda: build_backbone("roberta_base", tiny=True, weights=missing), missing)
    _one_line_error(lambda: build_backbone("roberta_base", tiny=True, drop_path_rate=0.1), "drop_path_rate")


@pytest.mark.parametrize("name", ["swin_base", "clip_vit_b16", "roberta_base"])
def test_pretrained_offline_fails_fast(name, monkeypatch, tmp_path):
    import huggingface_hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))   # nothing cached
    t0 = time.perf_counter()
    msg = _one_line_error(lambda: build_backbone(name, pretrained=True), BACKBONES[name].hub_repo, "weights=")
    assert time.perf_counter() - t0 < 5.0, msg


def test_import_is_light():
    """No module-level timm / transformers / huggingface_hub import: `import backbones` stays cheap (STYLE §11)."""
    import ast
    from support import backbone_loading
    for mod in (backbones, backbone_loading):
        tree = ast.parse(open(mod.__file__).read())
        top = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
        top += [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
        heavy = [m for m in top if m.split(".")[0] in ("timm", "transformers", "huggingface_hub", "safetensors")]
        assert not heavy, (mod.__name__, heavy)
    assert backbones.BACKBONES["swin_base"].hub_id == "swin_base_patch4_window7_224.ms_in22k"


# ------------------------------------------------------------------------------------------------------------
# pretrained=False (Table 2, Train-from-scratch): the same architecture, the library's own random init, for
# folders and weights= too (it used to load the checkpoint anyway: --method scratch was a second fine-tuning)
# ------------------------------------------------------------------------------------------------------------
def _perturbed(src, seed=7):
    """Every parameter moved off its initial value, so 'loaded' and 'freshly initialised' cannot coincide (a LayerNorm
    at 1/0 or a zero bias would otherwise be equal in both)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in src.library_model.parameters():
            p.add_(0.5 + torch.rand(p.shape, generator=g))
    return src


def _assert_scratch_vs_loaded(scratch, loaded, saved_sd, what):
    """scratch: same names, shapes and dtypes as the saved body, no parameter equal to the saved one; loaded: all equal."""
    sd_s, sd_l = scratch.library_model.state_dict(), loaded.library_model.state_dict()
    assert sd_s.keys() == saved_sd.keys() == sd_l.keys(), what
    assert all(sd_s[k].shape == saved_sd[k].shape and sd_s[k].dtype == saved_sd[k].dtype for k in saved_sd), what
    assert all(torch.equal(sd_l[k], saved_sd[k]) for k in saved_sd), what          # pretrained=True: exact
    params = [k for k, _ in scratch.library_model.named_parameters()]
    same = [k for k in params if torch.equal(sd_s[k], saved_sd[k])]
    assert params and not same, f"{what}: scratch body holds {len(same)} checkpoint tensors, e.g. {same[:3]}"
    enc_s, enc_l = scratch.encoder.state_dict(), loaded.encoder.state_dict()
    assert {k: v.shape for k, v in enc_s.items()} == {k: v.shape for k, v in enc_l.items()}, what


def _save_kind(kind, folder):
    """A tiny body of `kind` saved to `folder` (save_backbone, or a plain save_pretrained BERT) with moved weights."""
    torch.manual_seed(3)
    if kind == "bert_mlm":
        lib = _tiny_hf(kind)
        with torch.no_grad():
            for p in lib.parameters():
                p.add_(0.5)
        lib.save_pretrained(folder)
        return lib.state_dict()
    src = _perturbed(build_backbone(kind, tiny=True))
    save_backbone(src, folder)
    return src.library_model.state_dict()


@pytest.mark.parametrize("kind", FAMILIES + ["bert_mlm"])
def test_scratch_from_folder_is_random(kind, tmp_path):
    saved = _save_kind(kind, tmp_path / "bb")
    loaded = build_backbone(str(tmp_path / "bb")).eval()
    torch.manual_seed(11)
    scratch = build_backbone(str(tmp_path / "bb"), pretrained=False).eval()
    _assert_scratch_vs_loaded(scratch, loaded, saved, kind)
    assert (scratch.name, scratch.tiny, scratch.family) == (loaded.name, loaded.tiny, loaded.family)
    x = _raw_input(scratch, seed=4)
    with torch.no_grad():                                       # a working body, not only a bag of tensors
        f = scratch.source_features(x)
    assert f.shape == loaded.source_features(x).shape and torch.isfinite(f).all()
    if kind == "roberta_base":                                  # the MLM decoder stays tied to the word embeddings
        lib = scratch.library_model
        assert lib.lm_head.decoder.weight is lib.roberta.embeddings.word_embeddings.weight


@pytest.mark.parametrize("name", ["swin_base", "roberta_base"])
def test_scratch_with_weights_is_random(name, tmp_path):
    """weights= (a state-dict file, a folder holding it, a library folder with config.json) and pretrained=False: the
    BACKBONES architecture (or the folder's config), random; pretrained=True loads the same path exactly."""
    torch.manual_seed(5)
    src = _perturbed(build_backbone(name, tiny=True))
    sd = src.library_model.state_dict()
    if name == "swin_base":
        from safetensors.torch import save_file
        (tmp_path / "file").mkdir()
        save_file(sd, str(tmp_path / "file" / "model.safetensors"))
        paths = [tmp_path / "file" / "model.safetensors", tmp_path / "file"]
    else:
        (tmp_path / "file").mkdir()
        torch.save(sd, tmp_path / "file" / "pytorch_model.bin")
        paths = [tmp_path / "file" / "pytorch_model.bin", tmp_path / "file"]
    paths.append(save_backbone(src, tmp_path / "saved"))        # timm hub-style folder / save_pretrained folder
    for w in paths:
        loaded = build_backbone(name, tiny=True, weights=str(w))
        scratch = build_backbone(name, tiny=True, weights=str(w), pretrained=False)
        _assert_scratch_vs_loaded(scratch, loaded, sd, str(w))
    missing = str(tmp_path / "nowhere.safetensors")            # a typo is an error, random init or not
    _one_line_error(lambda: build_backbone(name, tiny=True, weights=missing, pretrained=False), missing)


# ------------------------------------------------------------------------------------------------------------
# Attention masks: padding never changes a real token's feature or the readout (BERT-family); 2D bodies refuse pads
# ------------------------------------------------------------------------------------------------------------
def test_masked_mean_against_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=g) > 0.4
    mask[1] = False                                             # a row without real tokens -> 0
    mask[2] = True
    x[~mask] = float("nan")                                     # a pad's value must not leak in
    ref = torch.zeros(4, 3, dtype=torch.float64)
    for b in range(4):
        rows = [x[b, t] for t in range(7) if mask[b, t]]
        if rows:
            ref[b] = sum(rows) / len(rows)
    for m in (mask, mask.long(), mask.float()):
        torch.testing.assert_close(backbones.masked_mean(x, m), ref)
    y = torch.randn(2, 5, 3)
    assert torch.equal(backbones.masked_mean(y), y.mean(dim=1))         # None: the plain mean, bit for bit
    torch.testing.assert_close(backbones.masked_mean(y, torch.ones(2, 5)), y.mean(dim=1))
    with pytest.raises(ValueError, match="attention_mask"):
        backbones.masked_mean(y, torch.ones(2, 4))


def _mention(src, n_real, T, seed=0):
    """A CoNLL-like mention: <s> word ids </s> (RoBERTa) / [CLS] ids [SEP] (BERT), right-padded with the pad id to T."""
    cfg = src.library_model.config
    g = torch.Generator().manual_seed(seed)
    pad, special = cfg.pad_token_id, {cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id} - {None}
    words = [int(i) for i in torch.randint(3, cfg.vocab_size, (3 * n_real,), generator=g) if int(i) not in special]
    ids = [0] + words[:n_real - 2] + [2]
    return torch.tensor([ids + [pad] * (T - n_real)]), torch.tensor([[1] * n_real + [0] * (T - n_real)])


def _hf_body(kind, tmp_path):
    if kind == "roberta":
        return build_backbone("roberta_base", tiny=True).eval()
    _tiny_hf("bert_mlm").save_pretrained(tmp_path / "bert")
    return build_backbone(str(tmp_path / "bert")).eval()


@pytest.mark.parametrize("kind", ["roberta", "bert_mlm"])
def test_padding_does_not_change_the_readout(kind, tmp_path):
    torch.manual_seed(0)
    src = _hf_body(kind, tmp_path)
    n = 11
    pooled, unmasked = {}, {}
    with torch.no_grad():
        for T in (32, 64):
            ids, mask = _mention(src, n, T)
            feats = src.encoder(src.source_embedder(ids), mask, return_prefix=True)      # (1, T, d)
            # oracle: the library's own forward with the same attention mask (every token, pads included)
            torch.testing.assert_close(feats, src.library_model.base_model(ids, attention_mask=mask).last_hidden_state,
                                       atol=ATOL, rtol=0)
            torch.testing.assert_close(src.logits_from_tokens(src.source_embedder(ids), mask),
                                       src.library_model(ids, attention_mask=mask).logits, atol=ATOL, rtol=0)
            pooled[T] = src.readout(feats, mask)
            torch.testing.assert_close(src.pooled_features(ids, mask), pooled[T])
            unmasked[T] = src.readout(src.encoder(src.source_embedder(ids), return_prefix=True))
        # oracle: the unpadded mention, no mask at all
        alone = src.readout(src.source_features(_mention(src, n, n)[0]))
    assert pooled[32].shape == (1, src.feature_dim)
    torch.testing.assert_close(pooled[32], pooled[64], atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled[32], alone, atol=1e-5, rtol=0)
    # without the mask the pads are attended to and averaged in: the test can fail
    assert (unmasked[32] - unmasked[64]).abs().max() > 1e-3
    assert (unmasked[32] - alone).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["swin_base", "vit_base", "clip_vit_b16"])
def test_2d_bodies_refuse_padding(name):
    src = build_backbone(name, tiny=True).eval()
    x = _raw_input(src)
    tokens = src.source_embedder(x)
    ones, holes = torch.ones(tokens.shape[:2]), torch.ones(tokens.shape[:2])
    holes[0, -1] = 0
    with torch.no_grad():
        assert torch.equal(src.encoder(tokens, ones), src.encoder(tokens))
        assert torch.equal(src.logits_from_tokens(tokens, ones.bool()), src(x))
        feats = src.encoder(tokens, return_prefix=True)
        assert torch.equal(src.readout(feats, ones), src.readout(feats))
    _one_line_error(lambda: src.encoder(tokens, holes), "attention_mask=None")
    _one_line_error(lambda: src.readout(feats, holes), "attention_mask=None")
    _one_line_error(lambda: src.encoder(tokens, torch.ones(2, 3)), "attention_mask must be (B, T)")


def test_masked_functional_call_double_backward():
    """functional_call(encoder, θ, (tokens,), {attention_mask, return_prefix}) -> readout, differentiated twice
    (Eq. 6's virtual step inside the outer loss), against float64 central finite differences; the pads get exactly
    zero gradient (they are neither attended to nor pooled)."""
    torch.manual_seed(0)
    src = build_backbone("roberta_base", tiny=True).double().eval()
    enc = src.encoder
    ids = torch.cat([_mention(src, 7, 12, seed=1)[0], _mention(src, 10, 12, seed=2)[0]])
    mask = ids != src.library_model.config.pad_token_id                              # (2, 12)
    with torch.no_grad():
        tok_s = src.source_embedder(ids)                                             # padded source tokens
        tok_t = src.source_embedder(torch.randint(3, 1000, (2, 12)))                 # "target" tokens
    theta = {k: p.detach().requires_grad_() for k, p in enc.named_parameters()}
    W = torch.randn(src.feature_dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y, alpha = torch.tensor([0, 2]), 0.5

    def l_out(th, tokens):
        feats = functional_call(enc, th, (tokens,), {"attention_mask": mask, "return_prefix": True})
        return src.readout(feats, mask).pow(2).mean()

    def objective(c, create_graph):
        li = F.cross_entropy(src.readout(functional_call(enc, theta, (tok_t * c,))) @ W, y)
        g = torch.autograd.grad(li, list(theta.values()), create_graph=create_graph)
        # Eq. (6): θ_f* = θ_f − α ∇_θf L_in
        theta_star = {k: p - alpha * gk for (k, p), gk in zip(theta.items(), g)}
        return li + l_out(theta_star, tok_s)

    c = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    (g_meta,) = torch.autograd.grad(objective(c, True), c)
    eps = 1e-5
    g_fd = (objective(c.detach() + eps, False) - objective(c.detach() - eps, False)) / (2 * eps)
    assert math.isclose(g_meta.item(), g_fd.item(), rel_tol=1e-5, abs_tol=1e-9), (g_meta.item(), g_fd.item())
    # the mask is data, not a parameter: pads do not reach L_out at all
    tok = tok_s.clone().requires_grad_()
    (g_tok,) = torch.autograd.grad(l_out(theta, tok), tok)
    assert g_tok[mask].abs().max() > 0 and torch.equal(g_tok[~mask], torch.zeros_like(g_tok[~mask]))
