"""Stage-1 length in optimizer steps (--stage1-steps) and the `--task custom` stage-1 defaults (bench/README.md,
"The sweeps behind the `--task custom` defaults"): the paper tasks keep App. A.1's epochs, lr and α = 0.01; your own data counts stage 1 in
optimizer steps, so a 50-sample task gets the stated number of steps of φ, not App. A.1's 10 epochs (20 steps at
batch 32)."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from readers import custom  # noqa: E402
import data  # noqa: E402
import stage1  # noqa: E402
import train  # noqa: E402
from run_hooks import kill_after  # noqa: E402


def write_task(folder, n_train=50, n_test=10, L=32, classes=3):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        np.save(os.path.join(folder, f"{split}_x.npy"), rng.normal(size=(n, 1, L)).astype(np.float32) + y[:, None, None])
        np.save(os.path.join(folder, f"{split}_y.npy"), y.astype(np.int64))
    return str(folder)


def stage1_rows(out):
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["stage"] == 1]


def resolved(*argv, task_dir=None):
    args = ["--task", *argv] if task_dir is None else ["--task", "custom", "--data-dir", task_dir, *argv]
    cfg = train.resolve_config(train.get_parser().parse_args(args))
    spec = data.load_task("custom", task_dir, protocol="strict").spec if task_dir else data.TASKS[argv[0]]
    return train.fill_from_spec(cfg, spec)


@pytest.mark.parametrize("steps, n_train, batch, world, epochs", [
    (100, 50, 32, 1, 50),      # 2 steps per pass (32 + 18)
    (7, 50, 16, 1, 2),         # 4 per pass: 4 + 3
    (8, 64, 16, 1, 2),         # exactly two passes
    (5, 50, 16, 2, 3),         # 25 per process -> 2 per pass
])
def test_passes_that_hold_the_steps(steps, n_train, batch, world, epochs):
    assert stage1.stage1_epochs_for(steps, n_train, batch, world) == epochs


def test_custom_defaults_count_steps_and_paper_tasks_keep_app_a1(tmp_path):
    d = write_task(tmp_path / "t")
    for method in ("mona", "emb"):
        cfg = resolved("--method", method, task_dir=d)
        assert cfg["stage1_steps"] == custom.CUSTOM_DEFAULTS["stage1_steps"]
        assert cfg["stage1_lr"] == custom.CUSTOM_DEFAULTS["stage1_lr"]
        assert cfg["alpha"] == custom.CUSTOM_DEFAULTS["alpha"]
    paper = resolved("ecg", "--method", "mona")
    assert (paper["stage1_steps"], paper["stage1_epochs"], paper["stage1_lr"], paper["alpha"]) == (None, 10, 3e-5, 0.01)
    orca = resolved("--method", "orca", task_dir=d)                # ORCA: one step per epoch, its own 60
    assert orca["stage1_steps"] is None and orca["stage1_epochs"] == 60
    explicit = resolved("--method", "mona", "--stage1-epochs", "3", "--alpha", "0.5", task_dir=d)
    assert explicit["stage1_steps"] is None and explicit["stage1_epochs"] == 3 and explicit["alpha"] == 0.5


def test_steps_and_epochs_together_is_one_line(tmp_path, capsys):
    d = write_task(tmp_path / "t")
    rc = train.main(["--task", "custom", "--data-dir", d, "--method", "emb", "--tiny", "--stage1-steps", "3",
                     "--stage1-epochs", "2", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--stage1-steps or --stage1-epochs" in err, err


def test_a_50_sample_task_gets_the_default_number_of_stage1_steps(tmp_path):
    """--task custom, Emb (the same stage-1 loop as MoNA, without the surrogate), no stage-1 flag: the stage-1
    rows hold exactly CUSTOM_DEFAULTS["stage1_steps"] optimizer steps over 50 samples at batch 32."""
    d, out = write_task(tmp_path / "t"), str(tmp_path / "run")
    assert train.main(["--task", "custom", "--data-dir", d, "--method", "emb", "--tiny", "--epochs", "1",
                       "--out", out, "--no-progress"]) == 0
    rows = stage1_rows(out)
    n_train = json.load(open(os.path.join(out, "result.json")))["n_train"]
    per_pass = -(-n_train // 32)
    assert sum(r["steps"] for r in rows) == custom.CUSTOM_DEFAULTS["stage1_steps"]
    assert len(rows) == -(-custom.CUSTOM_DEFAULTS["stage1_steps"] // per_pass)


def test_a_killed_stage1_resumes_to_the_same_number_of_steps(tmp_path, monkeypatch):
    """Killed after stage-1 pass 1 (7 steps at 4 per pass), then --resume: 7 steps in all, the last pass cut to 3."""
    d, out = write_task(tmp_path / "t"), str(tmp_path / "run")
    argv = ["--task", "custom", "--data-dir", d, "--method", "emb", "--tiny", "--epochs", "1", "--stage1-steps", "7",
            "--stage1-batch-size", "16", "--max-train-samples", "50", "--out", out, "--no-progress"]
    with kill_after("1:1"):
        assert train.main(argv) == 130
    assert train.main([*argv, "--resume"]) == 0
    rows = stage1_rows(out)
    n_train = json.load(open(os.path.join(out, "result.json")))["n_train"]
    per_pass = -(-n_train // 16)
    assert [r["steps"] for r in rows] == [per_pass] * (7 // per_pass) + ([7 % per_pass] if 7 % per_pass else [])


def test_mona_on_the_demo_runs_the_stated_steps(tmp_path):
    """MoNA's own branch of the loop (virtual step and meta term) stops at --stage1-steps too; --demo's one-epoch
    stage 1 gives way to an explicit step count."""
    out = str(tmp_path / "run")
    assert train.main(["--task", "ecg", "--method", "mona", "--demo", "--no-progress", "--epochs", "1",
                       "--max-train-samples", "16", "--batch-size", "8", "--stage1-steps", "3",
                       "--out", out]) == 0
    assert [r["steps"] for r in stage1_rows(out)] == [2, 1]


def test_discrepancy_on_a_body_without_its_head_is_one_line(tmp_path, capsys, monkeypatch):
    """Fig. 4 needs the complete source model: a bare encoder folder (sentence-transformers' all-MiniLM-L6-v2
    is a BertModel) gets one line naming what is missing and what works instead."""
    import transformers
    import discrepancy
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37, architectures=["BertModel"])
    transformers.BertModel(config).save_pretrained(tmp_path / "body")
    d = write_task(tmp_path / "t")
    rc = discrepancy.main(["--task", "custom", "--data-dir", d, "--backbone", str(tmp_path / "body")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "no source head" in err[0] and "ForMaskedLM" in err[0], err
