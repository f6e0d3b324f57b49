"""train.py's command line as a new user meets it (issue 13): Ctrl-C stops with one line and a resume command;
every numeric flag is checked by one rule per meaning; a resume with other flags names every difference; a run
that fails before writing leaves no folder behind; --help shows one default per flag; bf16 on the CPU is said;
an unreachable hub fails fast with suggestions that work; --task custom describes what it inferred; flags that
the chosen method never reads are refused."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402
import train  # noqa: E402
from run_hooks import kill_after  # noqa: E402
from support import cli  # noqa: E402

FAST = ["--demo", "--no-progress", "--epochs", "1", "--max-train-samples", "16", "--batch-size", "8"]


def run_main(tmp_path, *args, name="run"):
    out = str(tmp_path / name)
    return train.main([*args, "--out", out, *FAST]), out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_custom(folder, n_train=40, n_test=20, L=32, classes=3, seed=0):
    """A small custom 1D classification task (integer labels) as .npy files."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = rng.normal(size=(n, 1, L)).astype(np.float32) + y[:, None, None]
        np.save(os.path.join(folder, f"{split}_x.npy"), x)
        np.save(os.path.join(folder, f"{split}_y.npy"), y.astype(np.int64))
    return str(folder)


# -------------------------------------------------------------------------------------------------------------
# 1. Ctrl-C: one line saying where the run stopped and how to continue; exit 130
# -------------------------------------------------------------------------------------------------------------
def test_ctrl_c_prints_one_line_with_the_resume_command_and_the_command_finishes(tmp_path):
    """A real `python train.py` process gets SIGINT while it runs (a test hook holds it after stage-2 epoch 1,
    once metrics.jsonl shows that epoch): exit code 130, one stderr line naming the stage, the epoch and the
    command that continues the run; that command, run as printed, finishes the run."""
    out = tmp_path / "run"
    args = ["--task", "cifar100", "--method", "finetune", *FAST, "--epochs", "3", "--out", str(out)]
    # train.py's main, held 120 s after stage-2 epoch 1 (tests/run_hooks.py)
    proc = subprocess.Popen([sys.executable, os.path.join("tests", "run_hooks.py"), "2:1", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics, t0 = out / "metrics.jsonl", time.time()
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120, "the run never logged its first epoch"
        time.sleep(0.05)
    time.sleep(0.3)                                   # inside the hook's pause by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED == 130
    line = one_line(err)
    assert "stage 2" in line and "epoch 2 of 3" in line and "--resume" in line, line
    cmd = shlex.split(line.split("continue with: ", 1)[1])
    assert cmd[:2] == ["python", "train.py"] and cmd[-1] == "--resume"
    done = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(r) for r in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (out / "result.json").exists()


def test_interrupt_under_torchrun_prints_on_rank_0_only(tmp_path, monkeypatch, capsys):
    """Every rank gets the SIGINT of a Ctrl-C; only rank 0 prints the line (here: rank 1 alone, in-process)."""
    monkeypatch.setenv("RANK", "1")
    with kill_after("2:1"):
        rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune")
    assert rc == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == ""


def test_interrupt_before_anything_is_saved_says_so(tmp_path, monkeypatch, capsys):
    """Interrupted before the first epoch is saved: nothing to resume, so the line says to rerun the command,
    and no empty folder is left."""
    import stage2

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(stage2, "make_optimizer", interrupted)
    rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune")
    line = one_line(capsys.readouterr().err)
    assert rc == 130 and "nothing was saved" in line and "--resume" not in line
    assert not os.path.exists(out)


# -------------------------------------------------------------------------------------------------------------
# 2. Numeric flags: one rule per meaning
# -------------------------------------------------------------------------------------------------------------
RULES = {cli.pos_int: ["0", "-3", "1.5", "ten"], cli.nonneg_int: ["-1", "0.5", "x"],
         cli.pos_float: ["0", "-1e-3", "nan", "inf", "abc"], cli.nonneg_float: ["-0.1", "nan", "inf", "x"]}


def numeric_actions():
    return [a for a in train.get_parser()._actions if a.type in RULES]


def test_every_numeric_flag_has_one_of_the_four_rules():
    numeric = [a for a in train.get_parser()._actions if a.type in (int, float)]
    assert not numeric, f"flags with a bare int/float type: {[a.option_strings for a in numeric]}"
    flags = {a.option_strings[0] for a in numeric_actions()}
    assert {"--epochs", "--lr", "--weight-decay", "--stage1-lr", "--stage1-weight-decay", "--workers", "--seed",
            "--alpha", "--lam", "--inner-steps", "--decay-epochs", "--patch-length"} <= flags


@pytest.mark.parametrize("flag, bad", [(a.option_strings[0], v) for a in numeric_actions() for v in RULES[a.type]])
def test_bad_numeric_value_is_one_line_naming_the_flag_exit_2(flag, bad, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--task", "cifar100", f"{flag}={bad}"])
    assert e.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert flag in line and "--help" in line


@pytest.mark.parametrize("flag", ["--weight-decay", "--stage1-weight-decay", "--alpha", "--lam", "--workers",
                                  "--seed"])
def test_zero_is_accepted_where_it_means_something(flag):
    method = "mona" if flag in ("--stage1-weight-decay", "--alpha", "--lam") else "finetune"
    cfg = train.resolve_config(train.get_parser().parse_args(["--task", "ecg", "--method", method, flag, "0"]))
    assert cfg[flag[2:].replace("-", "_")] == 0


# -------------------------------------------------------------------------------------------------------------
# 3. Resume with other flags names every key that differs
# -------------------------------------------------------------------------------------------------------------
def test_resume_with_another_task_names_the_task_not_the_backbone(tmp_path, capsys):
    assert run_main(tmp_path, "--task", "ecg", "--method", "finetune")[0] == 0
    rc, _ = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--seed", "3", "--resume")
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "backbone" not in line, line
    assert "started with task='ecg'" in line and "now task='cifar100'" in line and "seed=0" in line \
        and "seed=3" in line, line


# -------------------------------------------------------------------------------------------------------------
# 5. bf16 on the CPU; 6. no empty folder; 7. --help
# -------------------------------------------------------------------------------------------------------------
def test_bf16_on_the_cpu_is_said_and_acts(tmp_path, capsys):
    losses = {}
    for precision in ("fp32", "bf16"):
        rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--device", "cpu",
                           "--precision", precision, name=precision)
        err = capsys.readouterr().err
        assert rc == 0
        notes = [line for line in err.splitlines() if "bf16" in line]
        assert len(notes) == (precision == "bf16"), err
        losses[precision] = json.loads(open(os.path.join(out, "metrics.jsonl")).readline())["train_loss"]
    assert "autocast acts on the CPU" in notes[0]
    assert losses["fp32"] != losses["bf16"]                 # it acts: matmuls run in bf16


def test_a_run_that_fails_on_its_data_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "bad"
    rc = train.main(["--task", "cifar100", "--method", "finetune", "--tiny", "--data-dir", str(tmp_path / "nodata"),
                     "--out", str(out), "--no-progress"])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
    assert not out.exists() and not out.parent.exists()


def test_an_existing_folder_is_kept_when_the_run_fails(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = train.main(["--task", "cifar100", "--method", "finetune", "--tiny", "--data-dir", str(tmp_path / "nodata"),
                     "--out", str(out), "--no-progress"])
    assert rc == 2 and (out / "notes.txt").read_text() == "keep me"


def test_help_shows_one_default_per_flag():
    text = " ".join(train.get_parser().format_help().split()).split(" options: ", 1)[1]
    assert "(default: None)" not in text
    out = text.split("--out OUT ", 1)[1].split(" --", 1)[0]
    assert out.count("default") == 1 and "runs/<task>-<method>" in out, out
    assert "(default: 0.5)" in text.split("--lam LAM", 1)[1].split(" --", 1)[0]


# -------------------------------------------------------------------------------------------------------------
# 9. meta_ratio explained; 10. the tokenizer without a hub; 11. MoNA / ORCA on your own data
# -------------------------------------------------------------------------------------------------------------
def test_meta_ratio_is_explained_in_the_alpha_help():
    text = " ".join(train.get_parser().format_help().split()).split(" options: ", 1)[1]
    alpha = text.split("--alpha ALPHA", 1)[1].split(" --lam", 1)[0]
    assert "meta_ratio" in alpha and "‖∇_φ L_inner‖" in alpha, alpha


def closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tokenizer_without_a_hub_fails_at_once_with_suggestions_that_work(tmp_path):
    """No HF_HUB_OFFLINE, the hub endpoint a closed local port: one line (no minute of retries) that suggests a
    local body folder (--backbone / --weights) and where the CoNLL-2003 surrogate goes (--source-dir)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    env["HF_HOME"] = str(tmp_path / "hf")                 # an empty cache
    code = ("import stage1; from support.runtime import RunError\n"
            "for task in ('ecg', 'custom'):\n    try:\n        stage1.load_tokenizer(dict(backbone='roberta_base', "
            "weights=None, task=task, source_dir='src'))\n    except RunError as e:\n        print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    paper, custom = proc.stdout.strip().splitlines()
    for line in (paper, custom):
        assert "roberta-base" in line and "unreachable" in line
        assert "--backbone" in line and "--weights" in line and "src/conll2003/eng.train" in line, line
    assert "--synthetic-data" in paper and "--synthetic-data" not in custom    # custom data has no synthetic form


def test_custom_1d_task_without_a_surrogate_says_what_to_put_where(tmp_path, capsys, monkeypatch):
    """MoNA / ORCA on your own 1D data with a real body (a local Hugging Face folder with a tokenizer) need the
    CoNLL-2003 surrogate: the message names --source-dir and the file it needs, and never falls back on synthetic
    data; it does not suggest what --task custom refuses (--synthetic-data, --demo)."""
    import transformers
    import backbones
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = write_custom(tmp_path / "task")
    config = transformers.RobertaConfig(**backbones.BACKBONES["roberta_base"].tiny)
    transformers.RobertaForMaskedLM(config).save_pretrained(tmp_path / "body")
    for method in ("mona", "orca"):
        rc = train.main(["--task", "custom", "--data-dir", d, "--method", method, "--backbone", str(tmp_path / "body"),
                         "--epochs", "1", "--source-dir", str(tmp_path / "src"), "--out", str(tmp_path / method),
                         "--no-progress"])
        out, err = capsys.readouterr()
        line = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(line) == 1 and "Traceback" not in err, err
        assert "--source-dir" in line[0] and "conll2003/eng.train" in line[0], line[0]
        assert "--synthetic-data" not in line[0] and "--demo" not in line[0], line[0]
        assert "stand-in" not in out + err


def write_custom_2d(folder, n_train=24, n_test=12, classes=3, seed=0):
    """A small custom 2D classification task (N, 1, 12, 12) as .npy files."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = rng.normal(size=(n, 1, 12, 12)).astype(np.float32) + y[:, None, None, None]
        np.save(os.path.join(folder, f"{split}_x.npy"), x)
        np.save(os.path.join(folder, f"{split}_y.npy"), y.astype(np.int64))
    return str(folder)


@pytest.mark.parametrize("dim", ["1d", "2d"])
def test_tiny_mona_and_orca_on_your_own_data_run_offline_on_the_synthetic_stand_in(tmp_path, capsys, dim):
    """--tiny on your own data: with no surrogate files, the synthetic source of the body's modality stands in
    for MoNA's and ORCA's surrogate (a tiny body cannot read real text; no CIFAR-10 batches in --source-dir), and
    one line says so."""
    d = write_custom(tmp_path / "task") if dim == "1d" else write_custom_2d(tmp_path / "task")
    for method in ("mona", "orca"):
        out = str(tmp_path / method)
        rc = train.main(["--task", "custom", "--data-dir", d, "--method", method, "--tiny", "--epochs", "1",
                         *(["--stage1-steps", "2"] if method == "mona" else ["--stage1-epochs", "1"]),
                         "--source-dir", str(tmp_path / "src"), "--out", out, "--no-progress"])
        printed = capsys.readouterr().out
        assert rc == 0 and os.path.exists(os.path.join(out, "result.json"))
        name = "CoNLL-2003" if dim == "1d" else "CIFAR-10"
        assert f"the synthetic {name} stand-in" in printed and "--tiny" in printed, printed


# -------------------------------------------------------------------------------------------------------------
# 13. --out naming a file; --resume on a finished run
# -------------------------------------------------------------------------------------------------------------
def test_out_naming_a_file_is_one_line_before_any_training(tmp_path, capsys):
    """--out naming an existing file (or a path below one) stops at once, one line, exit 2, no epoch trained (it
    used to train a whole epoch, then die with a FileExistsError traceback); the file is untouched."""
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for out in (f, f / "run"):
        rc = train.main(["--task", "cifar100", "--method", "finetune", *FAST, "--out", str(out)])
        printed, err = capsys.readouterr()
        assert rc == 2 and "is a file" in one_line(err) and "--out" in err, err
        assert "epoch=" not in printed
    assert f.read_text() == "mine"


def test_resume_on_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    """--resume on a run that wrote its result.json: exit 0, one line saying it is finished, and every file in
    --out untouched (result.json was rewritten before)."""
    rc, out = run_main(tmp_path, "--task", "cifar100", "--method", "finetune")
    assert rc == 0
    before = {n: (os.stat(os.path.join(out, n)).st_mtime_ns, open(os.path.join(out, n), "rb").read())
              for n in sorted(os.listdir(out))}
    capsys.readouterr()
    time.sleep(0.01)
    rc, _ = run_main(tmp_path, "--task", "cifar100", "--method", "finetune", "--resume")
    printed = capsys.readouterr().out
    assert rc == 0 and "finished run" in printed and "epoch=" not in printed, printed
    after = {n: (os.stat(os.path.join(out, n)).st_mtime_ns, open(os.path.join(out, n), "rb").read())
             for n in sorted(os.listdir(out))}
    assert after == before


def test_source_dir_defaults_to_the_data_dir():
    cfg = train.resolve_config(train.get_parser().parse_args(["--task", "ecg", "--data-dir", "dd"]))
    assert cfg["source_dir"] == "dd"


# -------------------------------------------------------------------------------------------------------------
# 12. --task custom: what was inferred, and the kind / patch-length overrides
# -------------------------------------------------------------------------------------------------------------
def test_custom_task_prints_what_was_inferred(tmp_path, capsys):
    d = write_custom(tmp_path / "task")
    rc = train.main(["--task", "custom", "--data-dir", d, "--method", "finetune", "--tiny", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    described = data.describe_task(data.load_task("custom", d, protocol="paper"))
    assert described in capsys.readouterr().out


def test_custom_task_kind_and_patch_length_flags_reach_the_task(tmp_path):
    from support import runtime
    d = write_custom(tmp_path / "task")
    args = train.get_parser().parse_args(["--task", "custom", "--data-dir", d, "--method", "finetune", "--tiny",
                                          "--target-kind", "regression", "--patch-length", "8",
                                          "--out", str(tmp_path / "run")])
    cfg = train.resolve_config(args)
    td, spec, _, model = train.build_run(cfg, runtime.setup_machine(cfg))
    assert spec.loss == "mse" and model.embedder.stack_num == 8


def test_patch_length_on_a_paper_task_is_one_line(tmp_path, capsys):
    rc, _ = run_main(tmp_path, "--task", "ecg", "--method", "finetune", "--patch-length", "4")
    assert rc == 2 and "--task custom" in one_line(capsys.readouterr().err)


# -------------------------------------------------------------------------------------------------------------
# Flags the method never reads
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, flags, named", [
    ("finetune", ["--stage1-lr", "1e-3"], "--stage1-lr"),
    ("scratch", ["--stage1-epochs", "3", "--stage1-weight-decay", "0"], "--stage1-epochs, --stage1-weight-decay"),
    ("emb", ["--lam", "0.3"], "--lam"),
    ("orca", ["--stage1-train-head"], "--stage1-train-head"),
    ("finetune", ["--source-dir", "x"], "--source-dir"),
])
def test_flags_the_method_never_reads_are_noted(tmp_path, capsys, method, flags, named):
    """A flag the chosen method never reads cannot change the run: one note names it (a loop over methods may
    share flags, so it is not refused)."""
    rc, _ = run_main(tmp_path, "--task", "ecg", "--method", method, *flags, "--stage", "1" if method in
                     ("emb", "orca") else "all")
    notes = [ln for ln in capsys.readouterr().err.splitlines() if named in ln]
    assert rc == 0 and len(notes) == 1 and "ignored" in notes[0] and f"--method {method}" in notes[0], notes


def test_stage1_flags_where_they_act_give_no_note(capsys):
    for method, flags in (("mona", ["--lam", "0.3", "--stage1-lr", "1e-4"]), ("orca", ["--stage1-epochs", "2"]),
                          ("emb", ["--stage1-train-head"])):
        assert train.unread_flags_note(train.get_parser().parse_args(["--task", "ecg", "--method", method,
                                                                       *flags])) is None


def test_stage_1_of_a_method_without_one_is_refused(tmp_path, capsys):
    rc, _ = run_main(tmp_path, "--task", "ecg", "--method", "frozen", "--stage", "1")
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "--stage 1" in line and "--method frozen" in line
