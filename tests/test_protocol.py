"""The two protocols of train.py (--protocol paper / strict) and the fidelity fixes of issue 9, against oracles:
hand-computed SGD steps for ORCA's summed accumulation, its per-micro-batch clipping and schedule; the data each
protocol trains on (CIFAR-100 files in their native format); result.json's keys; --stage1-batch-size; ORCA's
stage 1 (per-epoch class pools over the whole training set, maxsamples from the registry, --stage1-lr, its StepLR
rule); Darcy's per-sample validation loss; padded source text through the attention mask."""
import copy
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import losses  # noqa: E402
import metrics  # noqa: E402
import orca  # noqa: E402
import stage2  # noqa: E402
import train  # noqa: E402
from support import cli  # noqa: E402
from data_helpers import _write_cifar  # noqa: E402

FAST = ["--demo", "--no-progress", "--epochs", "1", "--max-train-samples", "16", "--batch-size", "8"]
CPU = dict(device=torch.device("cpu"), rank=0, world=1, main=True)
KEYS = {"protocol", "n_train", "n_val", "n_test", "test", "test_last", "metric_variant", "metric"}


def run_main(tmp_path, *args, name="run", fast=FAST):
    out = str(tmp_path / name)
    rc = train.main([*fast, *args, "--out", out])                 # explicit args win over `fast`
    return rc, out


def rows_of(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


# -------------------------------------------------------------------------------------------------------------
# What each protocol trains on, and what result.json says
# -------------------------------------------------------------------------------------------------------------
def test_cifar100_paper_trains_on_every_training_image_strict_on_the_published_split(tmp_path):
    """CIFAR-100 files in their native format: --protocol paper trains on all of them (ORCA's 50,000; no
    validation split), strict on NB360's first 80 % with the last 20 % as validation."""
    rng = np.random.default_rng(0)
    _write_cifar(str(tmp_path / "d" / "cifar-100-python" / "train"), 40, "fine_labels", rng)
    _write_cifar(str(tmp_path / "d" / "cifar-100-python" / "test"), 10, "fine_labels", rng)
    fast = ["--tiny", "--data-dir", str(tmp_path / "d"), "--epochs", "1", "--batch-size", "8", "--no-progress"]
    for protocol, sizes in (("paper", (40, 0, 10)), ("strict", (32, 8, 10))):
        rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--protocol", protocol,
                           name=protocol, fast=fast)
        assert rc == 0
        r = json.load(open(os.path.join(out, "result.json")))
        assert r["protocol"] == r["config"]["protocol"] == protocol
        assert (r["n_train"], r["n_val"], r["n_test"]) == sizes
        assert r["config"]["accum_reduction"] == {"paper": "sum", "strict": "mean"}[protocol]
        assert os.path.exists(os.path.join(out, "best.pt")) == (protocol == "strict")
        (row,) = rows_of(out)
        assert ("test_score" in row, "val_score" in row) == ((True, False) if protocol == "paper" else (False, True))


@pytest.mark.parametrize("method", list(train.METHODS))
def test_every_method_runs_paper_protocol(tmp_path, method):
    """--protocol paper (the default): test scored every epoch, headline = last epoch, best-on-test apart and
    labelled, no best.pt; ECG's two metric definitions (window F1 on ORCA's windows vs per-record vote) both
    reported."""
    rc, out = run_main(tmp_path, "--task", "ecg", "--method", method, "--epochs", "2")
    assert rc == 0
    r = json.load(open(os.path.join(out, "result.json")))
    assert KEYS | {"test_best_on_test", "test_best_on_test_note", "variants"} <= set(r)
    assert r["protocol"] == "paper" and r["n_val"] == 0 and r["metric_variant"] == "paper"
    assert "ORCA-compatible, optimistic" in r["test_best_on_test_note"]
    scores = [row["test_score"] for row in rows_of(out) if row["stage"] == 2]
    assert len(scores) == 2 and r["test"] == r["test_last"] == pytest.approx(scores[-1])
    assert r["test_best_on_test"] == pytest.approx(min(scores))
    assert set(r["variants"]) == {"paper", "corrected"}
    assert r["variants"]["paper"]["test"] == r["test"] and r["variants"]["corrected"]["metric"] == "one_minus_f1"
    assert not os.path.exists(os.path.join(out, "best.pt")) and os.path.exists(os.path.join(out, "last.pt"))


def test_strict_result_keys_and_variants(tmp_path):
    rc, out = run_main(tmp_path, "--task", "ecg", "--method", "finetune", "--protocol", "strict")
    assert rc == 0
    r = json.load(open(os.path.join(out, "result.json")))
    assert KEYS | {"variants", "best_val", "best_epoch"} <= set(r) and "test_best_on_test" not in r
    assert r["protocol"] == "strict" and r["n_val"] > 0 and r["metric_variant"] == "corrected"
    v = r["variants"]
    assert (v["corrected"]["test"], v["corrected"]["test_last"]) == (r["test"], r["test_last"])
    assert all(math.isfinite(v[k]["test"]) and math.isfinite(v[k]["test_last"]) for k in v)


@pytest.mark.parametrize("task", ["ecg", "deepsea"])
def test_paper_scores_orcas_shuffled_test_sets_in_one_seeded_order(task):
    """ORCA shuffles ECG's test windows (`load_ecg`) and DeepSEA's test loader, then averages its metric over
    chunks: the paper definition scores one permutation seeded by the run's seed, chunk by chunk, while the
    corrected definition (the whole set) does not depend on the order."""
    spec = data.get_task(task)
    rng = np.random.default_rng(0)
    n, chunk, bs = 600, 100, 20
    if spec.multilabel:
        target = (rng.random((n, spec.num_classes)) < 0.3).astype(np.float32)
        pred = (target + rng.normal(0, 1.0 + np.linspace(0, 3, n))[:, None]).astype(np.float32)
    else:
        target = rng.integers(0, spec.num_classes, n)
        pred = rng.normal(size=(n, spec.num_classes)).astype(np.float32)
        pred[np.arange(n // 2), target[: n // 2]] += 3.0            # the first half easy: order matters for chunks
    defs = stage2.metric_definitions(spec, seed=7)
    paper = dict(defs["paper"], chunk=chunk)
    assert paper["order_seed"] == 7 and defs["corrected"]["order_seed"] is None
    fn = metrics.METRICS[paper["metric"]]
    perm = np.random.default_rng(7).permutation(n)
    shuffled = metrics.chunk_average(fn, pred[perm], target[perm], chunk=chunk, batch_size=bs, **paper["kwargs"])
    in_order = metrics.chunk_average(fn, pred, target, chunk=chunk, batch_size=bs, **paper["kwargs"])
    assert stage2.score(pred, target, None, paper, bs) == pytest.approx(shuffled, abs=1e-12)
    assert abs(shuffled - in_order) > 1e-3                          # the order really changes the paper score
    other = stage2.score(pred, target, None, dict(paper, order_seed=8), bs)
    assert other != pytest.approx(shuffled, abs=1e-9)               # another seed, another permutation
    rev = np.arange(n)[::-1]
    assert stage2.score(pred[rev], target[rev], None, defs["corrected"], bs) == pytest.approx(
        stage2.score(pred, target, None, defs["corrected"], bs), abs=1e-12)


def test_the_test_order_seed_is_in_result_json(tmp_path):
    rc, out = run_main(tmp_path, "--task", "ecg", "--method", "finetune", "--seed", "3")
    r = json.load(open(os.path.join(out, "result.json")))
    assert rc == 0 and r["paper_test_order_seed"] == 3
    rc, out = run_main(tmp_path, "--task", "satellite", "--method", "finetune", name="sat")
    assert rc == 0 and "paper_test_order_seed" not in json.load(open(os.path.join(out, "result.json")))


def test_variants_absent_where_the_definitions_coincide(tmp_path):
    """CIFAR-100's synthetic test set (16 < one chunk of 1,000, same metric): one definition, labelled paper."""
    rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--protocol", "strict")
    r = json.load(open(os.path.join(out, "result.json")))
    assert rc == 0 and "variants" not in r and r["metric_variant"] == "paper"


def test_accum_reduction_follows_the_protocol_unless_given():
    parse = lambda *a: train.resolve_config(train.get_parser().parse_args(["--task", "cifar100", *a]))
    assert parse()["accum_reduction"] == "sum" and parse()["protocol"] == "paper"
    assert parse("--protocol", "strict")["accum_reduction"] == "mean"
    assert parse("--protocol", "strict", "--accum-reduction", "sum")["accum_reduction"] == "sum"
    assert parse("--accum-reduction", "mean")["accum_reduction"] == "mean"


def test_resume_refuses_another_protocol(tmp_path, capsys):
    assert run_main(tmp_path, "--task", "cifar100", "--method", "finetune")[0] == 0
    rc = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--protocol", "strict", "--resume")[0]
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE and "protocol='paper'" in err and "protocol='strict'" in err


# -------------------------------------------------------------------------------------------------------------
# ORCA's stage-2 mechanics under --protocol paper, against hand-computed SGD steps
# -------------------------------------------------------------------------------------------------------------
def _cfg(tmp_path, **kw):
    cfg = dict(method="finetune", protocol="paper", optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
               betas=[0.9, 0.98], clip=0.0, batch_size=1, accum=3, accum_reduction="sum", epochs=1,
               warmup_epochs=0, decay_epochs=10, seed=0, workers=0, no_progress=True, precision="fp32",
               out=str(tmp_path))
    cfg.update(kw)
    return cfg


def _toy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 4, generator=g), torch.randn(n, 2, generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    td = types.SimpleNamespace(train=ds, val=ds, test=ds, test_orca=None, output_decoder=None)
    spec = types.SimpleNamespace(loss="mse", loss_kwargs={}, metric="mse", metric_kwargs={}, group_reduce=None,
                                 paper_metric=None, paper_metric_kwargs={}, paper_group_reduce=None, eval_chunk=0,
                                 orca_test_shuffled=False)
    torch.manual_seed(0)
    return x, y, td, spec, torch.nn.Linear(4, 2)


def _order(cfg, n):
    """The sample order of stage 2's first epoch (runtime.make_loader with the epoch's seed)."""
    from support.runtime import epoch_seed, make_loader
    return [int(i) for i in make_loader(list(range(n)), 1, shuffle=True, seed=epoch_seed(cfg, 2, 0), m=CPU)]


def test_summed_accumulation_is_one_step_on_the_sum_of_the_losses(tmp_path):
    """k = 3 micro-batches, accum 3, SGD: θ' = θ − lr · f(2) · Σ_i ∇ℓ_i, f = ORCA's WarmupLR at micro-batch 2
    (the sum does not depend on the order of the micro-batches)."""
    x, y, td, spec, model = _toy(3)
    ref, cfg = copy.deepcopy(model), _cfg(tmp_path)
    stage2.stage2(cfg, CPU, model, td, spec, {}, lambda row, state: None)
    total = sum(losses.TASK_LOSSES["mse"]()(ref(x[i:i + 1]), y[i:i + 1]) for i in range(3))   # Σ_i ℓ_i
    grads = torch.autograd.grad(total, list(ref.parameters()))
    f = (10 * 3 - 2) / (10 * 3)                      # (D − step)/(D − W), D = 10 epochs · 3 micro-batches, W = 0
    assert stage2.orca_warmup_lr(0, 30)(2) == pytest.approx(f)
    for p, q, g in zip(model.parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p, q - cfg["lr"] * f * g)


def test_paper_clips_every_micro_batch_and_drops_the_leftover(tmp_path):
    """ORCA's train_one_epoch, by hand: after each backward the partial sum is clipped to norm c; a step after
    micro-batch 2 of 3 (accum 2); the third micro-batch's gradient is discarded (no step)."""
    x, y, td, spec, model = _toy(3, seed=1)
    ref, cfg = copy.deepcopy(model), _cfg(tmp_path, accum=2, clip=0.05, warmup_epochs=1)
    stage2.stage2(cfg, CPU, model, td, spec, {}, lambda row, state: None)
    order, params = _order(cfg, 3), list(ref.parameters())
    acc = [torch.zeros_like(p) for p in params]
    for i in order[:2]:
        g = torch.autograd.grad(losses.TASK_LOSSES["mse"]()(ref(x[i:i + 1]), y[i:i + 1]), params)
        acc = [a + b for a, b in zip(acc, g)]
        norm = torch.sqrt(sum((a ** 2).sum() for a in acc))
        acc = [a * min(1.0, cfg["clip"] / (float(norm) + 1e-6)) for a in acc]   # clip_grad_norm_
    f = 1 / 3                                        # warm-up over W = 1 epoch · 3 micro-batches, at step 1
    for p, q, a in zip(model.parameters(), ref.parameters(), acc):
        torch.testing.assert_close(p, q - cfg["lr"] * f * a)


def test_paper_step_is_accum_times_the_strict_step_per_unit_lr(tmp_path):
    """CIFAR-100's setting (SGD, momentum 0.9, accum 32, 5 warm-up epochs): the first update under the paper
    protocol, divided by its learning-rate factor, is accum × the strict protocol's (summed vs averaged
    micro-batches); the factors are ORCA's step/W over micro-batches and ours (step+1)/W over steps."""
    spec_c = data.TASKS["cifar100"]
    k = spec_c.accum
    x, y, td, spec, model = _toy(k, seed=2)
    model.double()                                   # float64 parameters: lr 1e-4 steps are not lost to rounding
    td.train = td.val = td.test = torch.utils.data.TensorDataset(x.double(), y)
    deltas = {}
    for protocol in ("paper", "strict"):
        net = copy.deepcopy(model)
        reduction = train.resolve_config(train.get_parser().parse_args(
            ["--task", "cifar100", "--protocol", protocol]))["accum_reduction"]      # sum (paper) / mean (strict)
        cfg = _cfg(tmp_path, protocol=protocol, accum=k, momentum=spec_c.momentum, lr=spec_c.lr,
                   warmup_epochs=spec_c.warmup_epochs, decay_epochs=spec_c.decay_epochs, accum_reduction=reduction)
        stage2.stage2(cfg, CPU, net, td, spec, {}, lambda row, state: None)
        deltas[protocol] = torch.cat([(q - p).flatten() for p, q in zip(net.parameters(), model.parameters())])
    f_paper = (k - 1) / (spec_c.warmup_epochs * k)   # ORCA: step/W at micro-batch k − 1, W = 5 · k micro-batches
    f_strict = 1 / spec_c.warmup_epochs              # ours: (0 + 1)/W at step 0, W = 5 · 1 step
    ratio = (deltas["paper"] / f_paper) / (deltas["strict"] / f_strict)
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(k)), rtol=1e-4, atol=0)


def test_darcy_val_loss_is_the_mean_per_sample_loss(tmp_path):
    """Darcy's loss sums over the batch (ORCA); evaluate reports (1/N) Σ_i ℓ_i, not × the batch length."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 1, 6, 6, generator=g), torch.randn(5, 1, 6, 6, generator=g) + 2
    spec = types.SimpleNamespace(loss="rel_l2", loss_kwargs={"reduction": "sum"}, metric="rel_l2", metric_kwargs={},
                                 group_reduce=None)
    td = types.SimpleNamespace(output_decoder=None)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    objective = losses.task_objective(spec, td, torch.device("cpu"))
    _, loss = stage2.evaluate(model, torch.utils.data.TensorDataset(x, y), spec, objective,
                              dict(batch_size=2, precision="fp32"), torch.device("cpu"))
    with torch.no_grad():
        per_sample = [float(torch.linalg.norm(model(x[i:i + 1]) - y[i:i + 1]) / torch.linalg.norm(y[i:i + 1]))
                      for i in range(5)]
    assert loss == pytest.approx(np.mean(per_sample), rel=1e-5)


# -------------------------------------------------------------------------------------------------------------
# Stage 1: --stage1-batch-size; ORCA's class pools, maxsamples, --stage1-lr, schedule
# -------------------------------------------------------------------------------------------------------------
def test_stage1_batch_size_sets_the_stage1_target_batch(tmp_path):
    for bs, steps in ((None, 2), ("4", 4), ("16", 1)):
        extra = [] if bs is None else ["--stage1-batch-size", bs]
        rc, out = run_main(tmp_path, "--task", "ecg", "--method", "emb", "--stage", "1", *extra, name=f"b{bs}")
        (row,) = [r for r in rows_of(out) if r["stage"] == 1]
        assert rc == 0 and (row["steps"], row["samples"]) == (steps, 16)


def test_orca_class_pools_are_fresh_each_epoch_and_cover_the_training_set():
    members = {c: np.arange(c * 10, c * 10 + 10) for c in range(4)}    # 40 samples, 4 classes
    draw = orca.orca_draw_size(3, 2)                 # batches of 2 until > 3 samples: 4
    assert draw == 4 and orca.orca_draw_size(128, 32) == 160 and orca.orca_draw_size(64, 1) == 65
    seen, epochs = set(), []
    for epoch in range(30):
        pools = orca.class_pools(members, draw, np.random.default_rng(epoch))
        assert sorted(c for c, _ in pools) == [0, 1, 2, 3]
        for c, idx in pools:
            assert len(idx) == 4 and set(idx) <= set(members[c]) and len(set(idx)) == 4
        epochs.append({c: tuple(idx) for c, idx in pools})
        seen |= {int(i) for _, idx in pools for i in idx}
    assert epochs[0] != epochs[1] and seen == set(range(40))


@pytest.mark.parametrize("task, cap", [("cifar100", 128), ("psicov", 64), ("deepsea", 64), ("ecg", 128)])
def test_orca_maxsamples_from_the_registry(task, cap):
    cfg = train.resolve_config(train.get_parser().parse_args(["--task", task, "--method", "orca"]))
    cfg = train.fill_from_spec(cfg, data.TASKS[task])
    assert cfg["orca_maxsamples"] == data.TASKS[task].orca_maxsamples == cap


def test_orca_stage1_lr_and_weight_decay_follow_orca_unless_given():
    """ORCA: the task's stage-2 optimizer and weight decay, lr ×10 when ≤ 1e-3; the flags replace them."""
    def resolved(*a):
        cfg = train.resolve_config(train.get_parser().parse_args(["--task", "cifar100", "--method", "orca", *a]))
        return train.fill_from_spec(cfg, data.TASKS["cifar100"])
    assert (resolved()["stage1_lr"], resolved()["stage1_weight_decay"]) == pytest.approx((1e-3, 1e-3))
    assert resolved("--lr", "0.01")["stage1_lr"] == 0.01
    cfg = resolved("--stage1-lr", "0.5", "--stage1-weight-decay", "0.2")
    assert (cfg["stage1_lr"], cfg["stage1_weight_decay"]) == (0.5, 0.2)


def test_orca_stage1_lr_acts_on_the_embedder_update(tmp_path):
    """One ORCA epoch = one SGD step (momentum buffer = the gradient): Δφ_e ∝ the stage-1 lr."""
    cfg = train.resolve_config(train.get_parser().parse_args(
        ["--task", "cifar100", "--method", "orca", "--out", str(tmp_path / "x"), *FAST]))
    _, _, _, model = train.build_run(cfg, CPU)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("embedder.")}
    deltas = []
    for lr in ("1", "3"):
        rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "orca", "--stage", "1", "--stage1-lr", lr,
                           "--stage1-weight-decay", "0", name=f"lr{lr}")
        after = torch.load(os.path.join(out, "stage1_embedder.pt"), weights_only=False)["model"]
        assert rc == 0 and rows_of(out)[0]["lr"] == float(lr)
        deltas.append(torch.cat([(after[k] - before[k]).flatten() for k in before]))
    assert deltas[0].abs().max() > 0
    torch.testing.assert_close(deltas[1], 3 * deltas[0], rtol=1e-3, atol=1e-4 * float(deltas[0].abs().max()))


def test_orca_schedule_matches_orcas_steplr_rule():
    """ORCA's StepLR lambda (src/task_configs.py): factor 0.2^k, k = number of milestones 20, 40, 60 that
    the 0-based epoch EXCEEDS; a LambdaLR stepped after each epoch's one update. The 21st epoch (index 20)
    still runs at the full rate (MultiStepLR([20, 40, 60]) would decay it)."""
    def oracle(epoch):
        for i, m in enumerate(reversed((20, 40, 60))):
            if epoch > m:
                return 0.2 ** (3 - i)
        return 1.0
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, orca.orca_step_lr)
    for epoch in range(100):
        assert opt.param_groups[0]["lr"] == pytest.approx(oracle(epoch)) == pytest.approx(orca.orca_step_lr(epoch))
        opt.step()
        sched.step()
    assert orca.orca_step_lr(20) == 1.0 and orca.orca_step_lr(21) == pytest.approx(0.2)


# -------------------------------------------------------------------------------------------------------------
# Padded source text: the attention mask and the body's readout
# -------------------------------------------------------------------------------------------------------------
class _PaddedIds(torch.utils.data.Dataset):
    """Token ids with `real` real tokens then padding (pad_id 1, RoBERTa's), labels 0..3."""

    def __init__(self, n=6, T=12, real=7, vocab=1000, pad_id=1):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.full((n, T), pad_id, dtype=torch.long)
        self.ids[:, :real] = torch.randint(3, vocab, (n, real), generator=g)
        self.pad_id, self.real, self.labels = pad_id, real, np.arange(n) % 4

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], int(self.labels[i])


def test_padded_source_features_equal_the_unpadded_ones():
    """probe.py's features and MoNA's outer-loss features of a padded CoNLL-style batch, with the mask
    ids != pad_id, equal the mean encoder output of the same sentences without padding (oracle)."""
    import backbones
    import probe
    import stage1
    torch.manual_seed(0)
    source = backbones.build_backbone("roberta_base", tiny=True).eval()
    ds = _PaddedIds()
    unpadded = ds.ids[:, :ds.real]
    with torch.no_grad():
        oracle = source.encoder(source.source_embedder(unpadded)).mean(1)              # (n, d)
        feats, labels = probe.extract_features(source, ds, device="cpu")
        np.testing.assert_allclose(feats, oracle.numpy(), rtol=1e-4, atol=1e-5)
        mask = stage1.source_mask(ds, ds.ids)
        f_s = stage1.source_features(source.encoder, dict(source.encoder.named_parameters()), source,
                                     source.source_embedder(ds.ids), mask, dict(precision="fp32"), "cpu")
        torch.testing.assert_close(f_s, torch.nn.functional.normalize(oracle, dim=-1), rtol=1e-4, atol=1e-5)
        ds.pad_id = None                                  # without the mask the padding changes the features
        assert not np.allclose(probe.extract_features(source, ds, device="cpu")[0], oracle.numpy(), atol=1e-3)
