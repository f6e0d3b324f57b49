"""Tests of discrepancy.py (Definition 2.1, App. A.4, Alg. 2) and probe.py (§2.2, Fig. 2-3) against oracles:
plain per-experiment loops on the same random draws, brute force over all subsets and permutations,
scikit-learn, and the command lines on a tiny backbone with synthetic data."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import discrepancy as dm  # noqa: E402


# ---------------------------------------------------------------------------------------------------------
# oracles


def _pred_class(z_i, B):
    """argmax_{k∈B} z_ik with the module's documented tie rule (equal logits -> lowest class index)."""
    Bs = sorted(int(b) for b in B)
    return Bs[int(np.argmax(z_i[Bs]))]  # np.argmax returns the first maximum = lowest class in sorted order


def paper_loop(z, y, T, I, seed):
    """Alg. 2 as written, one experiment at a time, drawing the documented S + T uniforms per experiment."""
    rng = np.random.default_rng(seed)
    n, S = z.shape
    values = []
    for _ in range(I):
        k = rng.random(S + T)
        B = np.argsort(k[:S])[:T]  # random subset, in key order
        pi = np.argsort(k[S:])  # random permutation: target t <-> slot pi[t]
        mismatches = sum(_pred_class(z[i], B) != B[pi[y[i]]] for i in range(n))  # Eq. (10)
        values.append(mismatches / n)  # Eq. (11)
    return min(values), np.array(values)


def brute_force(z, y, T):
    """min over ALL subsets B and ALL permutations π of Eq. (11)."""
    n, S = z.shape
    best = np.inf
    for B in itertools.combinations(range(S), T):
        pred = np.array([_pred_class(z[i], B) for i in range(n)])
        for p in itertools.permutations(range(T)):
            best = min(best, float(np.mean(pred != np.array(B)[np.array(p)[y]])))
    return best


def planted(seed, n=240, S=20, T=4):
    """Logits where subset B* with matching M* (target t <-> class M*[t]) gives D = 0, while a decoy class
    0 has the largest logit for every sample (any subset holding it is bad)."""
    rng = np.random.default_rng(seed)
    M = rng.choice(np.arange(1, S), T, replace=False)
    y = rng.integers(0, T, n)
    z = rng.normal(0.0, 0.3, (n, S))
    z[:, 0] += 10.0
    z[np.arange(n), M[y]] += 3.0
    return z, y, M


# ---------------------------------------------------------------------------------------------------------
# discrepancy.py


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_finds_planted_zero(seed):
    z, y, M = planted(seed)
    d = dm.discrepancy_details(z, y, 300, "assignment", seed, progress=False)
    assert d["discrepancy"] == 0.0
    assert set(d["subset"].tolist()) == set(M.tolist())
    np.testing.assert_array_equal(d["matching"], M)  # target t is matched with source class M[t]
    np.testing.assert_array_equal(d["subset"][d["permutation"]], M)
    D, _ = dm.subset_discrepancy(z, y, d["subset"], d["permutation"])  # the reported (B, π) really give 0
    assert D == 0.0
    assert dm.modality_discrepancy(z, y, 300, "assignment", seed, progress=False) == 0.0


def test_assignment_never_exceeds_random_on_same_subsets():
    rng = np.random.default_rng(123)
    for case in range(25):
        S = int(rng.integers(2, 30))
        T = int(rng.integers(1, S + 1))
        n = int(rng.integers(1, 80))
        z = rng.normal(size=(n, S)) if case % 3 else rng.integers(0, 3, (n, S))  # every third case: ties
        y = rng.integers(0, T, n)
        I = int(rng.integers(1, 60))
        r = dm.discrepancy_details(z, y, I, "random", case, num_target_classes=T, progress=False)
        a0 = dm.discrepancy_details(z, y, I, "assignment", case, num_target_classes=T, progress=False,
                                    local_search_steps=0)
        a = dm.discrepancy_details(z, y, I, "assignment", case, num_target_classes=T, progress=False)
        assert a0["random_discrepancy"] == r["discrepancy"]  # the same draws were scored
        np.testing.assert_array_equal(a0["random_values"], r["random_values"])
        assert a["discrepancy"] <= a0["discrepancy"] <= r["discrepancy"]
        assert np.all(np.diff(a0["curve"]) <= 0) and a0["curve"][-1] == a0["discrepancy"]
        # the reported subset and permutation reproduce the reported value
        for det in (r, a0, a):
            D, _ = dm.subset_discrepancy(z, y, det["subset"], det["permutation"], num_target_classes=T)
            assert D == pytest.approx(det["discrepancy"], abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    S, T, n = 5, 3, 30
    z = rng.normal(size=(n, S)) if seed < 3 else rng.integers(0, 2, (n, S)).astype(float)
    y = rng.integers(0, T, n)
    exact = brute_force(z, y, T)
    ex = dm.discrepancy_details(z, y, method="assignment", exhaustive=True, num_target_classes=T, progress=False)
    assert ex["discrepancy"] == pytest.approx(exact, abs=1e-12)
    assert ex["num_subsets"] == 10
    for method in ("random", "assignment"):
        assert dm.modality_discrepancy(z, y, 50, method, seed, num_target_classes=T,
                                       progress=False) >= exact - 1e-12


@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_random_equals_per_experiment_loop(ties):
    rng = np.random.default_rng(7)
    S, T, n, I = 12, 4, 25, 40
    z = rng.integers(0, 3, (n, S)).astype(np.float32) if ties else rng.normal(size=(n, S)).astype(np.float32)
    y = rng.integers(0, T, n)
    best, values = paper_loop(z, y, T, I, seed=5)
    for chunk in (None, 1, 7):  # the chunked draws do not depend on the chunk size
        d = dm.discrepancy_details(z, y, I, "random", 5, num_target_classes=T, chunk_size=chunk, progress=False)
        np.testing.assert_array_equal(d["random_values"], values)  # the same mismatch counts / n_t
        assert d["discrepancy"] == best


def test_local_search_swap_gains_match_recomputation():
    """_swap_gains' closed form (matching held fixed) against recomputing Eq. (11) after each swap."""
    rng = np.random.default_rng(3)
    S, T, n = 9, 3, 60
    z, y = rng.normal(size=(n, S)), rng.integers(0, T, n)
    B, pi = np.array([4, 1, 7]), np.array([2, 0, 1])
    rank_t, _ = dm._rank_tables(z)
    N, outside, current = dm._swap_gains(rank_t, y, B, pi)
    assert current == round((1 - dm.subset_discrepancy(z, y, B, pi)[0]) * n)
    for a, k in enumerate(outside):
        for o in range(T):
            B2 = B.copy()
            B2[o] = k
            D2, _ = dm.subset_discrepancy(z, y, B2, pi)
            assert N[a, o] == pytest.approx((1 - D2) * n, abs=1e-6)


def test_input_errors():
    z, y = np.zeros((4, 3)), np.array([0, 1, 2, 3])
    with pytest.raises(dm.DiscrepancyError, match=r"\|Y\^s\| >= \|Y\^t\|"):
        dm.modality_discrepancy(z, y, 5, progress=False)
    with pytest.raises(dm.DiscrepancyError, match="shape"):
        dm.modality_discrepancy(z, y[:3], 5, progress=False)
    with pytest.raises(dm.DiscrepancyError, match=r"\[0, 2\)"):
        dm.modality_discrepancy(z, y, 5, num_target_classes=2, progress=False)
    with pytest.raises(dm.DiscrepancyError, match="integer"):
        dm.modality_discrepancy(z, np.array([0.5, 1, 0, 1]), 5, progress=False)
    with pytest.raises(dm.DiscrepancyError, match="method"):
        dm.modality_discrepancy(z, y % 3, 5, method="greedy", progress=False)
    with pytest.raises(dm.DiscrepancyError, match="NaN"):
        dm.modality_discrepancy(np.full((4, 3), np.nan), y % 3, 5, progress=False)



def test_discrepancy_parser():
    """get_parser parses a list of strings; defaults are the paper's (I = 100,000, Alg. 2's random search)."""
    a = dm.get_parser().parse_args(["--task=ecg", "--tiny", "--num-experiments", "7", "--method", "assignment"])
    assert (a.task, a.tiny, a.num_experiments, a.method, a.synthetic_data) == ("ecg", True, 7, "assignment", False)
    d = dm.get_parser().parse_args([])
    assert (d.num_experiments, d.method, d.seed, d.max_samples, d.checkpoint) == (dm.NUM_EXPERIMENTS, "random", 0,
                                                                                 None, None)
    assert "Alg. 2" in dm.get_parser().format_help()


@pytest.mark.parametrize("argv, message", [
    (["--task", "ninapro", "--method", "greedy"], "invalid choice: 'greedy'"),
    (["--task", "ninapro", "--num-experiments", "many"], "must be an integer >= 1"),
    (["--task", "ninapro", "--max-samples", "0"], "must be an integer >= 1, got '0'"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_discrepancy_cli_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        dm.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err

# ---------------------------------------------------------------------------------------------------------
# probe.py

probe = pytest.importorskip("probe")


def blobs(seed, n=400, d=20, K=4, sep=8.0, draw=0):
    """Gaussian blobs around K centres fixed by `seed`; `draw` picks an independent sample (train / test)."""
    centres = np.random.default_rng(seed).normal(0.0, sep, (K, d))
    rng = np.random.default_rng([seed, draw + 1])
    y = rng.integers(0, K, n)
    return centres[y] + rng.normal(size=(n, d)), y


def test_linear_probe_error_separable_and_shuffled():
    """Fit on one draw, score on another draw of the same blobs (the train / test splits of probe_models)."""
    (X, y), (Xt, yt) = blobs(0, draw=0), blobs(0, n=200, draw=1)
    assert probe.linear_probe_error(X, y, Xt, yt) < 1.0  # separable classes: ~0 % test error
    y_shuffled = np.random.default_rng(1).permutation(y)  # training labels independent of the features
    err = probe.linear_probe_error(X, y_shuffled, Xt, yt)
    assert 55.0 < err < 95.0  # chance is 75 % for 4 balanced classes
    other = blobs(1, n=200, draw=1)  # other centres: what the probe learnt does not transfer
    assert probe.linear_probe_error(X, y, *other) > 30.0
    with pytest.raises(probe.ProbeError, match="single class"):
        probe.linear_probe_error(X, np.zeros(len(y), int), Xt, yt)
    with pytest.raises(probe.ProbeError, match="d=20"):
        probe.linear_probe_error(X, y, Xt[:, :5], yt)


def test_davies_bouldin_matches_formula_and_sklearn():
    from sklearn.metrics import davies_bouldin_score

    X, y = blobs(2, n=120, d=5, K=3, sep=2.0)
    K = 3
    c = np.stack([X[y == k].mean(0) for k in range(K)])
    s = np.array([np.linalg.norm(X[y == k] - c[k], axis=1).mean() for k in range(K)])
    R = [max((s[k] + s[m]) / np.linalg.norm(c[k] - c[m]) for m in range(K) if m != k) for k in range(K)]
    assert probe.davies_bouldin(X, y) == pytest.approx(np.mean(R), rel=1e-10)
    assert probe.davies_bouldin(X, y) == pytest.approx(davies_bouldin_score(X, y), rel=1e-12)


def test_pictures_are_written(tmp_path):
    X, y = blobs(3, n=40, d=6, K=3)
    emb = probe.tsne_plot(X, y, str(tmp_path / "tsne.png"), title="tiny")
    assert emb.shape == (40, 2)
    probe.bar_chart(["a", "b", "c"], [10.0, 20.0, 15.0], str(tmp_path / "bars.png"), reference=12.0)
    for name in ("tsne.png", "bars.png"):
        data = (tmp_path / name).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------
# command lines on a tiny backbone with synthetic data (need backbones.py, data.py, embedders.py, predictors.py)


def _siblings():
    for mod in ("torch", "backbones", "data", "embedders", "predictors"):
        pytest.importorskip(mod, reason=f"{mod} is needed by the command-line parts")
    import backbones
    import data
    import predictors
    import torch

    return torch, backbones, data, predictors


@pytest.fixture(scope="module")
def tiny_swin():
    """The tiny Swin body as train.py / the command lines build it (torch seed 0 first); never modified."""
    torch, backbones, _, _ = _siblings()
    torch.manual_seed(0)
    return backbones.build_backbone("swin_base", tiny=True).eval()


def _write_checkpoint(path, task, source, *, encoder_noise=0.0, embedder_noise=0.0):
    """A train.py checkpoint in the documented format (mona-checkpoint-v1) on a copy of `source`."""
    import copy

    torch, _, data, predictors = _siblings()
    model = predictors.build_target_model(data.get_task(task), copy.deepcopy(source), init="source").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(encoder_noise * torch.randn(p.shape, generator=g))
        for p in model.embedder.parameters():
            p.add_(embedder_noise * torch.randn(p.shape, generator=g))
    cfg = {"task": task, "method": "finetune", "backbone": "swin_base", "tiny": True, "weights": None, "seed": 0}
    torch.save({"format": "mona-checkpoint-v1", "config": cfg, "model": model.state_dict(), "stage": 2,
                "epoch": 1}, path)
    return model


def _train_inputs(task, n):
    torch, _, data, _ = _siblings()
    td = data.load_task(task, synthetic=True, max_train_samples=n, seed=0)
    return torch.stack([td.train[i][0] for i in range(len(td.train))]), np.array([int(t[1]) for t in td.train])


def test_source_logits_of_a_three_channel_task_equal_the_source_forward(tiny_swin):
    """For a 3-channel task the source-initialised target embedder IS the source embedder (copied patch
    kernel and norm), so the logits must equal the complete source model's own forward on the images."""
    torch, _, _, _ = _siblings()
    z, y, spec, info = dm.target_source_logits("cifar100", synthetic=True, tiny=True, max_samples=12, seed=0)
    x, y_ref = _train_inputs("cifar100", 12)
    with torch.no_grad():
        ref = tiny_swin(x).numpy()  # g_{θ^S_0}(x): (12, |Y^s|)
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(y, y_ref)
    assert z.shape == (12, tiny_swin.num_source_classes) and spec.num_classes == 100


def test_discrepancy_cli_tiny_synthetic(tiny_swin, tmp_path, capsys):
    torch, _, data, _ = _siblings()
    import embedders

    def printed_D():
        return float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[-1])

    x, y = _train_inputs("ninapro", 64)
    spec = data.get_task("ninapro")
    # oracle logits: source-initialised embedder -> pretrained encoder -> source head, built by hand
    emb = embedders.build_embedder(tiny_swin, spec.input_shape[0])
    embedders.init_embedder_from_source(emb, tiny_swin)
    with torch.no_grad():
        z = tiny_swin.logits_from_tokens(emb.eval()(x)).numpy()
    assert dm.main(["--task", "ninapro", "--synthetic-data", "--tiny", "--num-experiments", "300",
                    "--no-progress"]) == 0
    assert printed_D() == pytest.approx(dm.modality_discrepancy(z, y, 300, num_target_classes=18, progress=False),
                                        abs=1e-4)
    # --checkpoint: the trained embedder φ_e of the file is used (oracle: the saved model's own embedder)
    ck = str(tmp_path / "stage1_embedder.pt")
    model = _write_checkpoint(ck, "ninapro", tiny_swin, embedder_noise=0.05)
    with torch.no_grad():
        zc = tiny_swin.logits_from_tokens(model.embedder(x)).numpy()
    assert np.abs(zc - z).max() > 1e-3  # the perturbed embedder changes the logits
    assert dm.main(["--checkpoint", ck, "--synthetic-data", "--num-experiments", "50", "--method", "assignment",
                    "--no-progress"]) == 0
    assert printed_D() == pytest.approx(dm.modality_discrepancy(zc, y, 50, "assignment", num_target_classes=18,
                                                                progress=False), abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--task", "fsd50k", "--synthetic-data", "--tiny"], "not single-label classification"),
    (["--task", "no-such-task", "--synthetic-data", "--tiny"], "no-such-task"),
    (["--task", "ninapro", "--checkpoint", "/no/such/file.pt"], "no such file"),
    (["--synthetic-data", "--tiny"], "no target task"),
])
def test_discrepancy_cli_expected_mistakes(argv, message, capsys):
    _siblings()
    assert dm.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_entry_points_exit_without_traceback():
    _siblings()
    for script, argv in (("discrepancy.py", ["--task", "darcyflow", "--synthetic-data", "--tiny"]),
                         ("probe.py", ["--checkpoint", "/no/such/file.pt"])):
        r = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error: ")
        assert len(r.stderr.strip().splitlines()) == 1
    for script in ("discrepancy.py", "probe.py"):  # argparse's own usage error: usage line + one line, exit 2
        r = subprocess.run([sys.executable, os.path.join(ROOT, script), "--batch-size", "0"], capture_output=True,
                           text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("usage: ")
        assert "--batch-size: must be an integer >= 1" in r.stderr


def test_probe_parser_and_mistakes(tmp_path, capsys):
    a = probe.get_parser().parse_args(["--checkpoint", "a.pt", "b.pt", "--tiny", "--checkpoint=c.pt"])
    assert a.checkpoint == ["a.pt", "b.pt", "c.pt"] and a.tiny and a.max_samples == probe.MAX_SAMPLES
    assert probe.get_parser().parse_args([]).checkpoint is None
    with pytest.raises(SystemExit) as e:
        probe.main(["--max-samples", "x"])
    assert e.value.code == 2 and "must be an integer >= 1" in capsys.readouterr().err
    _siblings()
    # real data asked for, none there: one line naming the missing CIFAR-10 file (train split read first)
    assert probe.main(["--tiny", "--data-dir", str(tmp_path), "--no-tsne"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data_batch_1" in err and len(err.strip().splitlines()) == 1


def _probe_oracle(source, n):
    """Pretrained-encoder numbers by hand: mean-pooled features of the synthetic surrogate's train and test
    splits, scikit-learn's scaler + logistic regression fit on train, error and DB index on test."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import davies_bouldin_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, _, data, _ = _siblings()
    feats = []
    for split in ("train", "test"):
        ds = data.load_source_surrogate("cifar10", synthetic=True, max_samples=n, seed=0, split=split)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.no_grad():
            feats.append((source.source_features(x).mean(1).numpy(), ds.labels))  # (n, d) f^s_i
    (Xtr, ytr), (Xte, yte) = feats
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(Xtr, ytr)
    return 100.0 * np.mean(clf.predict(Xte) != yte), davies_bouldin_score(Xte, yte)


def test_probe_cli_tiny_synthetic(tiny_swin, tmp_path, capsys):
    same, moved = str(tmp_path / "same.pt"), str(tmp_path / "moved.pt")
    _write_checkpoint(same, "cifar100", tiny_swin)  # encoder = the pretrained one: same probe numbers
    distorted = _write_checkpoint(moved, "ninapro", tiny_swin, encoder_noise=0.5).encoder  # θ^T_f
    out = tmp_path / "probe"
    assert probe.main(["--checkpoint", same, moved, "--tiny", "--synthetic-data", "--max-samples", "30",
                       "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {ln.split()[0]: (float(ln.split()[1]), float(ln.split()[2])) for ln in lines[1:4]}
    assert set(rows) == {"pretrained", "cifar100-finetune", "ninapro-finetune"}
    assert rows["cifar100-finetune"] == rows["pretrained"]
    assert rows["ninapro-finetune"][1] != rows["pretrained"][1]  # the checkpoint's encoder was really loaded
    # oracle: the probe trains on the train split, error and DB index come from the test split
    for name, encoder in (("pretrained", None), ("ninapro-finetune", distorted)):
        source = tiny_swin
        if encoder is not None:  # the source model with the checkpoint's encoder θ^T_f swapped in
            import copy

            source = copy.deepcopy(tiny_swin)
            source.encoder.load_state_dict(encoder.state_dict())
        err, db = _probe_oracle(source, 30)
        assert rows[name][0] == pytest.approx(err, abs=0.006) and rows[name][1] == pytest.approx(db, abs=6e-4)
    for name in ("tsne_pretrained.png", "tsne_cifar100-finetune.png", "tsne_ninapro-finetune.png",
                 "linear_probe.png"):
        assert (out / name).stat().st_size > 1000


def test_probe_refuses_checkpoints_of_different_source_bodies(tiny_swin, tmp_path, capsys):
    """One "Pretrained" reference belongs to one source body: a 2D (Swin) and a 1D (RoBERTa) checkpoint together
    used to draw a single, wrong reference line for one of them."""
    torch, _, _, _ = _siblings()
    swin = str(tmp_path / "swin.pt")
    _write_checkpoint(swin, "cifar100", tiny_swin)
    text = str(tmp_path / "roberta.pt")
    ck = torch.load(swin, weights_only=False)
    ck["config"] = dict(ck["config"], task="ecg", backbone="roberta_base")
    torch.save(ck, text)
    assert probe.main(["--checkpoint", swin, text, "--synthetic-data", "--max-samples", "20", "--no-tsne",
                       "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different source bodies" in err[0] and "swin_base" in err[0] and "roberta_base" in err[0]


def test_discrepancy_draws_progress_bars_only_on_a_terminal(tmp_path):
    """Redirected output (a log file) gets the result lines only, no progress-bar frames."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "discrepancy.py"), "--task", "ninapro",
                            "--synthetic-data", "--tiny", "--num-experiments", "3000"],
                           stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "subset/s" not in text and "it/s" not in text, text[-500:]
