"""Tests for bench/regime.py (the stage-2 regime study on real weights), without training: the statistics (paired
per-seed differences, the t interval against a hand computation, the bootstrap interval, the verdicts), the merge
of records (old ones kept, none duplicated), each run's command line (every stage-1 setting pinned, the same in
every regime but --lr, resolved by train.py's own config code to the same stage 1 in every regime and, at lr 1e-4,
to the benchmark's configuration), the run order, and the runner / report glue with a fake train.py and probe."""
import json
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import real_weights as rw  # noqa: E402
import regime  # noqa: E402

PATHS = {"body": "/w/minilm", "data": "/w/tasks", "source": "/w/source"}


def rec(task, method, lr, seed, test, last=None, probe=36.6, pre=36.6):
    return dict(name=regime.regime_name(task, method, lr, seed), task=task, method=method, lr=lr, seed=seed,
                test=test, test_last=test if last is None else last, best_epoch=5, epochs=10, seconds=1.0,
                probe_error=probe, db=6.6, pretrained_error=pre, pretrained_db=6.65, probe_error_last=probe,
                db_last=6.6, commit="x")


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
def test_t_interval_against_a_hand_computation():
    d = [-2.0, -1.0, -3.0, 0.0, -4.0]
    # mean -2, sample sd √(10/4) = 1.5811, se = 1.5811/√5 = 0.70711; t_{0.975, 4} = 2.776445 (tables)
    half = 2.776445105197799 * math.sqrt(2.5) / math.sqrt(5)
    m, lo, hi = regime.t_interval(d)
    assert m == -2.0 and lo == pytest.approx(-2.0 - half, abs=1e-9) and hi == pytest.approx(-2.0 + half, abs=1e-9)
    assert hi == pytest.approx(-0.0368, abs=1e-4)                 # just below 0: "helps" by the t interval
    m, lo, hi = regime.t_interval([1.0, 3.0])                     # t_{0.975, 1} = 12.7062: ± 12.7062
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - 12.706204736, 2.0 + 12.706204736))
    assert math.isnan(regime.t_interval([1.0])[1]) and math.isnan(regime.t_interval([])[0])


def test_bootstrap_interval_is_seeded_inside_the_range_and_degenerate_for_equal_values():
    d = [-2.0, -1.0, -3.0, 0.0, -4.0]
    lo, hi = regime.bootstrap_interval(d)
    assert (lo, hi) == regime.bootstrap_interval(d)               # seeded: the same every time
    assert -4.0 <= lo < -2.0 < hi <= 0.0
    _, tlo, thi = regime.t_interval(d)
    assert hi - lo < thi - tlo                                      # narrower than the t interval with 5 seeds
    assert regime.bootstrap_interval([2.5, 2.5, 2.5]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in regime.bootstrap_interval([1.0]))


def test_verdicts():
    def v(d):
        return regime.verdict(regime.t_interval(d), regime.bootstrap_interval(d))
    assert v([-2.0, -1.0, -3.0, 0.0, -4.0]) == "helps"
    assert v([2.0, 1.0, 3.0, 0.0, 4.0]) == "hurts"
    assert v([-2.0, 1.0, -3.0, 2.0, 0.5]) == "cannot tell"          # straddles 0
    assert v([-5.0]) == "cannot tell"                               # one seed: no interval
    assert v([0.0, 0.0, 0.0]) == "cannot tell"                      # identical runs: [0, 0] is not below 0
    assert v([-2.5, -2.5, -2.5]) == "helps"
    # both intervals must agree: the t interval straddles 0 while the bootstrap one does not
    assert regime.verdict((-1.0, -3.0, 0.5), (-2.0, -0.1)) == "cannot tell"
    assert regime.verdict((1.0, 0.2, 2.0), (-0.1, 2.0)) == "cannot tell"


def test_paired_differences_use_the_seeds_both_methods_share_in_one_task_and_regime():
    records = [rec("osuleaf", "mona", 1e-3, s, 40.0 + s) for s in range(5)]
    records += [rec("osuleaf", "finetune", 1e-3, s, 50.0) for s in (0, 1, 2, 4)]       # seed 3 missing
    records += [rec("osuleaf", "emb", 1e-3, s, 30.0) for s in range(3)]
    records += [rec("osuleaf", "finetune", 1e-4, 3, 0.0), rec("basicmotions", "finetune", 1e-3, 3, 0.0)]
    assert regime.paired(records, "mona", "finetune", "osuleaf", 1e-3) == {0: -10.0, 1: -9.0, 2: -8.0, 4: -6.0}
    assert regime.paired(records, "mona", "emb", "osuleaf", 1e-3) == {0: 10.0, 1: 11.0, 2: 12.0}
    assert regime.paired(records, "mona", "finetune", "osuleaf", 3e-4) == {}
    records[0]["test_last"] = 0.0
    assert regime.paired(records, "mona", "finetune", "osuleaf", 1e-3, "test_last")[0] == -50.0


def test_distortion_pairs_and_correlation():
    records = []
    for s, inc in enumerate((0.0, 2.0, 5.0, 9.0)):                 # more distortion by finetune, more MoNA gain
        records += [rec("osuleaf", "finetune", 1e-3, s, 50.0, probe=36.6 + inc),
                    rec("osuleaf", "mona", 1e-3, s, 50.0 - 2 * inc)]
    records.append(rec("osuleaf", "mona", 1e-3, 4, 10.0))          # no finetune partner: left out
    x, y = regime.distortion_pairs(records)
    assert x == pytest.approx([0.0, 2.0, 5.0, 9.0]) and y == pytest.approx([0.0, -4.0, -10.0, -18.0])
    c = regime.correlation(x, y)
    assert c["n"] == 4 and c["r"] == pytest.approx(-1.0) and c["rho"] == pytest.approx(-1.0)
    assert math.isnan(regime.correlation([1.0, 2.0], [1.0, 2.0])["r"])          # too few pairs
    assert regime.distortion_pairs(records, tasks=("basicmotions",)) == ([], [])


# ---------------------------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------------------------
def test_merge_keeps_old_records_and_never_duplicates(tmp_path):
    path = str(tmp_path / "sub" / "regime_runs.json")
    old = [rec("osuleaf", "mona", 1e-3, 0, 40.0), rec("osuleaf", "finetune", 1e-3, 0, 50.0)]
    assert regime.merge_records(path, old) == 2
    changed = dict(old[0], test=99.0)                              # the same run again, another value
    new = rec("basicmotions", "emb", 1e-4, 2, 5.0)
    assert regime.merge_records(path, [changed, new, new]) == 1
    got = regime.load_records(path)
    assert len(got) == 3 and len({r["name"] for r in got}) == 3
    assert next(r for r in got if r["name"] == old[0]["name"])["test"] == 40.0      # the old record stays
    assert regime.merge_records(path, got) == 0
    assert os.listdir(tmp_path / "sub") == ["regime_runs.json"]     # no lock or temporary file left beside it
    assert [r["name"] for r in got] == ["osuleaf-finetune-lr0.001-s0", "osuleaf-mona-lr0.001-s0",
                                        "basicmotions-emb-lr0.0001-s2"]            # task, lr, method, seed order


# ---------------------------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------------------------
def _args(cmd):
    import train
    assert cmd[1].endswith("train.py")
    return train.get_parser().parse_args(cmd[2:])


@pytest.mark.parametrize("method", regime.METHODS)
def test_every_setting_is_pinned_and_only_lr_differs_between_regimes(method):
    import train
    cmds = {lr: regime.command(PATHS, "osuleaf", method, lr, 3, "/w/regime/x") for lr in regime.LRS}
    args = {lr: vars(_args(c)) for lr, c in cmds.items()}
    base = args[regime.LRS[0]]
    for lr in regime.LRS:
        assert args[lr]["lr"] == lr and args[lr]["seed"] == 3 and args[lr]["protocol"] == "strict"
        assert {k: v for k, v in args[lr].items() if k != "lr"} == {k: v for k, v in base.items() if k != "lr"}
        assert cmds[lr].count("--epochs") == 1 and cmds[lr].count("--lr") == 1
        assert train.unread_flags_note(_args(cmds[lr])) is None, "a flag the method ignores"
    # the stage-2 schedule, and every valued stage-1 flag the method reads (train.METHOD_FLAGS), on the line
    reads = {k for k, users in train.METHOD_FLAGS.items() if method in users}
    needed = {"epochs", "decay_epochs", "batch_size", "accum", "accum_reduction", "weight_decay", "lr"}
    needed |= reads - {"stage1_train_head", "cache_outer_grad", "no_inner_loss", "source_dir"}   # store_true: off
    if method in ("emb", "mona"):
        needed -= {"stage1_epochs"}               # their length is --stage1-steps (the two exclude each other)
    assert {k for k in needed if regime.flag(k) not in cmds[1e-4]} == set()
    assert ("--source-dir" in cmds[1e-4]) == ("source_dir" in reads)
    assert base["stage1_lr"] == {"scratch": None, "finetune": None, "orca": 1e-3}.get(method, 3e-5)


def _custom_task(tmp_path):
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "tasks" / "osuleaf")
    for split, n in (("train", 40), ("test", 10)):
        np.save(tmp_path / "tasks" / "osuleaf" / f"{split}_x.npy", rng.normal(size=(n, 1, 32)).astype(np.float32))
        np.save(tmp_path / "tasks" / "osuleaf" / f"{split}_y.npy", np.arange(n) % 4)
    os.makedirs(tmp_path / "minilm")
    return {"body": str(tmp_path / "minilm"), "data": str(tmp_path / "tasks"), "source": str(tmp_path / "source")}


def _resolved(cmd, paths):
    import data
    import train
    cfg = train.resolve_config(_args(cmd))
    td = data.load_task("custom", cfg["data_dir"], protocol=cfg["protocol"], seed=cfg["seed"])
    return train.fill_from_spec(cfg, td.spec)


def test_train_resolves_the_same_stage_1_in_every_regime_and_the_benchmark_at_lr_1e_4(tmp_path):
    """train.py's own resolution (resolve_config + fill_from_spec on a custom folder): stage 1 identical across
    regimes (ORCA's lr stays 1e-3 instead of following 10 × the stage-2 lr), the config the records are checked
    against, and at lr 1e-4 exactly what real_weights.py's command resolved to (so those runs must reproduce
    bench/results/runs.json)."""
    paths = _custom_task(tmp_path)
    stage1 = ("stage1_epochs", "stage1_steps", "stage1_lr", "stage1_weight_decay", "stage1_batch_size", "alpha",
              "lam", "inner_steps", "meta", "hvp", "outer_loss", "source_classes", "source_per_class",
              "orca_samples", "orca_maxsamples")
    for method in regime.METHODS:
        cfgs = {lr: _resolved(regime.command(paths, "osuleaf", method, lr, 1, "/w/o"), paths) for lr in regime.LRS}
        for lr, cfg in cfgs.items():
            assert {k: cfg[k] for k in stage1} == {k: cfgs[1e-4][k] for k in stage1}, (method, lr)
            assert cfg["lr"] == lr and cfg["decay_epochs"] == 20 and cfg["warmup_epochs"] == 1
            assert regime.config_mismatch(cfg, regime.expected_config(method, lr, 1)) == []
        if method == "orca":
            assert cfgs[1e-3]["stage1_lr"] == 1e-3 and cfgs[1e-3]["stage1_epochs"] == 60
        bench = _resolved(rw.train_command(paths, "osuleaf", method, 1, "/w/o") + ["--source-dir", paths["source"]],
                          paths)
        assert {k: v for k, v in bench.items() if k != "source_dir"} == \
               {k: v for k, v in cfgs[1e-4].items() if k != "source_dir"}, method
    assert method == "orca"
    bad = dict(cfgs[1e-3], warmup_epochs=5, stage1_lr=1e-2)
    assert len(regime.config_mismatch(bad, regime.expected_config("orca", 1e-3, 1))) == 2


def test_smoke_shortens_the_schedule_and_nothing_else():
    full, smoke = (regime.command(PATHS, "osuleaf", "mona", 1e-3, 0, "/o", smoke=s) for s in (False, True))
    a, b = vars(_args(full)), vars(_args(smoke))
    assert (b["epochs"], b["decay_epochs"], b["stage1_steps"]) == (1, 2, 2)
    assert {k for k in a if a[k] != b[k]} == {"epochs", "decay_epochs", "stage1_steps"}
    assert vars(_args(regime.command(PATHS, "osuleaf", "orca", 1e-3, 0, "/o", smoke=True)))["stage1_epochs"] == 1
    assert os.path.dirname(regime.run_dir("w", "r", smoke=True)) != os.path.dirname(regime.run_dir("w", "r"))


# ---------------------------------------------------------------------------------------------------------------
# run order
# ---------------------------------------------------------------------------------------------------------------
def test_run_order_is_seed_major_with_orca_last_within_each_seed():
    runs = regime.plan()
    assert len(runs) == len(set(runs)) == 3 * 3 * (5 + 5 + 3 + 3 + 3)
    assert runs[:3] == [("osuleaf", "finetune", 1e-3, 0), ("osuleaf", "mona", 1e-3, 0), ("osuleaf", "emb", 1e-3, 0)]
    seeds = [s for _, _, _, s in runs]
    assert seeds == sorted(seeds)                                             # seed-major
    for s in range(5):
        block = [m for _, m, _, seed in runs if seed == s]
        first_orca = block.index("orca") if "orca" in block else len(block)
        assert "orca" not in block[:first_orca] and set(block[first_orca:]) <= {"orca"}
        cells = {(t, m, lr) for t, m, lr, seed in runs if seed == s}
        methods = {"finetune", "mona"} if s >= 3 else set(regime.METHODS)
        assert cells == {(t, m, lr) for t in regime.TASKS for m in methods for lr in regime.LRS}   # every cell
    assert [lr for t, m, lr, s in runs if (t, m, s) == ("osuleaf", "finetune", 0)] == [1e-3, 3e-4, 1e-4]
    assert {m for _, m, _, _ in regime.plan(methods=("mona", "finetune", "scratch", "emb"))} == \
        {"mona", "finetune", "scratch", "emb"}
    assert regime.plan(tasks=("basicmotions",), lrs=(1e-4,), methods=("mona",), seeds=(1, 4)) == \
        [("basicmotions", "mona", 1e-4, 1), ("basicmotions", "mona", 1e-4, 4)]
    assert regime.plan(methods=("emb",), seeds=(3,)) == []                    # emb has seeds 0-2 only


# ---------------------------------------------------------------------------------------------------------------
# the runner and the report, with a fake train.py and probe
# ---------------------------------------------------------------------------------------------------------------
def test_runner_skips_recorded_runs_records_the_others_and_refuses_a_foreign_config(tmp_path, monkeypatch):
    ran = []

    def fake_run(cmd, out, threads):                   # what run_claimed does, minus train.py
        a = vars(_args(cmd))
        cfg = dict(regime.expected_config(a["method"], a["lr"], a["seed"]))
        if a["seed"] == 2:
            cfg["warmup_epochs"] = 3                   # a default that moved: the run must not be recorded
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(dict(test=10.0 + a["seed"], test_last=9.0, best_epoch=4, epochs=10, seconds=1.0, config=cfg), f)
        os.remove(out + ".lock")
        ran.append(os.path.basename(out))
        return "1 s  ok"

    monkeypatch.setattr(rw, "run_claimed", fake_run)
    monkeypatch.setattr(regime, "probe_run", lambda out, paths, threads=1: dict(
        probe_error=40.0, db=7.0, pretrained_error=36.6, pretrained_db=6.65, probe_error_last=41.0, db_last=7.1,
        probe_encoders=3, probe_seconds=1.0))
    records = str(tmp_path / "records.json")
    regime.merge_records(records, [rec("osuleaf", "mona", 1e-3, 0, 77.0)])
    runs = regime.plan(tasks=("osuleaf",), lrs=(1e-3,), methods=("mona",), seeds=(0, 1, 2))
    regime.run_study(PATHS, str(tmp_path / "work"), records, runs)
    assert ran == ["osuleaf-mona-lr0.001-s1", "osuleaf-mona-lr0.001-s2"]       # s0 has a record: never rerun
    got = {r["name"]: r for r in regime.load_records(records)}
    assert set(got) == {"osuleaf-mona-lr0.001-s0", "osuleaf-mona-lr0.001-s1"}   # s2: foreign config, refused
    assert got["osuleaf-mona-lr0.001-s0"]["test"] == 77.0
    assert got["osuleaf-mona-lr0.001-s1"]["probe_error_last"] == 41.0 and got["osuleaf-mona-lr0.001-s1"]["lr"] == 1e-3
    regime.run_study(PATHS, str(tmp_path / "work"), records, runs)              # resumed: nothing to train again
    assert len(ran) == 2


def test_report_and_figure_from_records_alone(tmp_path):
    records = []
    for s in range(5):
        records += [rec("osuleaf", "finetune", 1e-3, s, 50.0 + s, probe=40.0 + s),
                    rec("osuleaf", "mona", 1e-3, s, 45.0 + s + 0.5 * (s % 2), probe=37.0)]
    records += [rec("osuleaf", "emb", 1e-3, s, 45.0 + s) for s in range(3)]
    records += [rec("osuleaf", "scratch", 1e-3, s, 60.0, probe=61.0) for s in range(3)]
    records += [rec("osuleaf", m, 1e-4, 0, 50.0) for m in ("mona", "finetune")]
    path = tmp_path / "regime_runs.json"
    path.write_text(json.dumps(records))
    text = regime.write_report(str(path), str(tmp_path))
    assert (tmp_path / "regime.png").stat().st_size > 10000
    rows = [ln for ln in text.splitlines() if ln.startswith("| osuleaf | 0.001 | mona − finetune | selected")]
    assert len(rows) == 1 and rows[0].endswith("| helps |") and "| 5 | -4.80 |" in rows[0]
    assert [ln for ln in text.splitlines() if "| osuleaf | 0.001 | mona − emb | selected" in ln][0].endswith(
        "| cannot tell |")
    assert "| 0.001 | +8.00 | +8.00 |" in text                       # scratch − finetune: 60 − 52
    assert "| 0.001 | finetune | 5 | 52.00 ± 1.58 |" in text
    assert "| all tasks | selected epoch | 6 |" in text             # 5 pairs at lr 1e-3, 1 at 1e-4
