"""report.py: a runs folder -> the paper's tables (MoNA paper, arXiv 2406.18864, Tables 1-4, 6) and Fig. 6.

Most runs are written directly as train.py writes them (result.json + metrics.jsonl); one end-to-end test runs
train.py --demo for two methods and reports on them. Expected cells are computed here from the inputs and the
paper's numbers (statistics.mean / statistics.stdev, i.e. the sample standard deviation, ddof=1)."""
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import report  # noqa: E402

PAPER = report.load_paper()


def write_run(root, name, task, method, seed, test, *, cfg=None, metric="error", history=None, **extra):
    """A run folder in train.py's format: result.json (keys of train.run) and metrics.jsonl (one row per epoch)."""
    d = os.path.join(str(root), name)
    os.makedirs(d, exist_ok=True)
    config = dict(task=task, method=method, backbone="roberta_base" if task in ("ecg", "advection") else "swin_base",
                  weights=None, data_dir="data", out=d, stage="all", resume=False, seed=seed, epochs=60, batch_size=32,
                  accum=1, lr=1e-4, weight_decay=0.0, max_train_samples=None, alpha=0.01, lam=0.5, inner_steps=1,
                  meta="exact", outer_loss="align_uniform", no_inner_loss=False, tiny=False, synthetic_data=False,
                  demo=False, stage1_epochs=10)
    config.update(cfg or {})
    result = dict(task=task, method=method, metric=metric, lower_is_better=True, best_val=test + 1.0, best_epoch=3,
                  test=test, test_last=test + 0.5, epochs=60, stage1_epochs=10, seconds=1.0, config=config)
    result.update(extra)
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    if history is None:
        history = [{"stage": 1, "method": "mona", "epoch": 1, "seconds": 1.0, "inner_loss": 4.6,
                    "inner_grad_norm": 1.4, "meta_norm": 0.12, "meta_ratio": 0.09, "outer_loss": -2.1}] * (
            method == "mona")
        history += [{"stage": 2, "epoch": e, "train_loss": 4.0 / e, "lr": 1e-4, "val_score": 60.0 - e,
                     "val_loss": 4.2 / e, "seconds": 0.3} for e in (1, 2, 3)]
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in history))
    return d


def paper_run(root, name, task, method, seed, test, **kw):
    return write_run(root, name, task, method, seed, test, protocol="paper", metric_variant="paper", **kw)


def build(root):
    runs, problems = report.load_runs(str(root), PAPER)
    g = report.group(runs, PAPER, problems)
    return g, report.render_markdown(g, PAPER, str(root))


def row_line(md, label):
    """The markdown row of a table whose first cell starts with `label`."""
    return next(line for line in md.splitlines() if line.startswith(f"| {label} "))


def expected_cell(values, paper_value, marks=""):
    """The cell, computed independently of report.py: mean ± sample std (ddof=1), paper, Δ = ours − paper."""
    m = statistics.mean(values)
    s = f"{m:.4g} ± {statistics.stdev(values):.2g} (n={len(values)})" if len(values) > 1 else f"{m:.4g} (n=1)"
    d = m - paper_value
    return s + f" · paper {paper_value:.4g} · Δ {d:+.3g} ({d / abs(paper_value):+.1%})" + (
        f" [{','.join(marks)}]" if marks else "")


def test_paper_numbers_are_data_with_sources_and_our_cli_names():
    import data
    import train
    # a few cells copied by hand from the paper
    t = PAPER["tables"]
    assert t["table2"]["rows"][6]["values"][0] == 6.48 and t["table2"]["rows"][6]["label"] == "MoNA"
    assert t["table2"]["rows"][3]["values"][5] == 35.20                  # Frozen-encoder, NinaPro
    assert t["table1"]["rows"][2]["values"][9] == 0.28                   # DASH, DeepSEA
    assert t["table3"]["rows"][5]["values"][1] == 7.59                   # MoNA, CLIP ViT-B/16, NinaPro
    assert t["table4"]["rows"][3]["values"][0] == 0.0098                 # ORCA, Advection
    assert t["table4"]["rows"][2]["values"][4] is None                   # U-Net, Navier-Stokes: "–"
    assert t["table6"]["rows"][0]["values"][3] == 0.58                   # w/o L_inner, FSD50K
    assert PAPER["figure6"]["lam"]["values"] is None and PAPER["figure6"]["lam"]["optimal_range"] == [0.3, 0.5]
    for tid, spec in t.items():
        assert spec["source"] == f"MoNA paper (arXiv 2406.18864), Table {tid[-1]}"
        assert all(len(r["values"]) == len(spec["columns"]) for r in spec["rows"])
        assert set(spec["columns"]) <= set(data.TASKS)                   # our --task names
        for r in spec["rows"]:
            if r["match"]:
                assert r["cli"].split()[0] in train.METHODS
    assert set(PAPER["tasks"]) == {n for n in data.TASKS}
    assert all(PAPER["tasks"][n]["our_metric"] == s.metric for n, s in data.TASKS.items())
    assert set(PAPER["methods"]) == set(train.METHODS)
    args = train.get_parser().parse_args(["--task", "cifar100"])
    assert report.MONA_DEFAULTS == dict(lam=args.lam, inner_steps=args.inner_steps, outer_loss=args.outer_loss,
                                        no_inner_loss=args.no_inner_loss)


def test_cells_mean_sample_std_and_difference_to_the_paper(tmp_path):
    mona, ft = [6.1, 6.7, 7.0], [54.0, 57.5]
    for s, v in enumerate(mona):
        paper_run(tmp_path, f"cifar100-mona-{s}", "cifar100", "mona", s, v)
    for s, v in enumerate(ft):
        paper_run(tmp_path, f"spherical-finetune-{s}", "spherical", "finetune", s, v)
    g, md = build(tmp_path)
    cell = g["tables"]["table2"]["cells"][6, "cifar100"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(statistics.mean(mona))
    assert cell["std"] == pytest.approx(np.std(mona, ddof=1)) and cell["diff"] == pytest.approx(np.mean(mona) - 6.48)
    assert expected_cell(mona, 6.48) in row_line(md, "MoNA (`mona`)")                      # Table 2
    assert expected_cell(ft, 55.26) in row_line(md, "Finetuning (`finetune`)")             # Table 2
    assert expected_cell(ft, 55.26) in row_line(md, "Finetuning, Swin-Base (88M), IN-22K")   # Table 3, Swin-B row
    assert expected_cell(mona, 6.48) in md.split("## Table 6")[1]                            # Table 6, MoNA row
    assert "| ecg" not in md and "— (no run)" in row_line(md, "Train-from-scratch")
    assert not any(ch.isdigit() for ch in row_line(md, "Train-from-scratch (`scratch`)").split("|", 2)[2])


def test_lambda_and_k_sweeps_give_fig6_curves(tmp_path):
    lam = {0.1: [30.2], 0.3: [27.6], 0.5: [27.0, 27.4], 1.0: [31.5]}
    for x, vals in lam.items():
        for s, v in enumerate(vals):
            paper_run(tmp_path, f"sph-lam{x}-{s}", "spherical", "mona", s, v, cfg={"lam": x})
    paper_run(tmp_path, "sph-K3", "spherical", "mona", 0, 26.5, cfg={"inner_steps": 3})
    g, _ = build(tmp_path)
    curve = g["fig6"]["lam"]["spherical"]
    assert list(curve) == [0.1, 0.3, 0.5, 1.0]
    assert [curve[x]["mean"] for x in curve] == pytest.approx([statistics.mean(v) for v in lam.values()])
    assert curve[0.5]["std"] == pytest.approx(statistics.stdev(lam[0.5])) and curve[0.5]["diff"] is None
    assert list(g["fig6"]["inner_steps"]["spherical"]) == [1.0, 3.0]
    assert g["tables"]["table2"]["cells"][6, "spherical"]["values"] == lam[0.5]   # only λ = 0.5 in Table 2
    assert report.main([str(tmp_path), "--no-curves"]) == 0
    md = open(tmp_path / report.REPORT_NAME).read()
    assert f"| 0.3 | {statistics.mean(lam[0.3]):.4g} (n=1) |" in md
    assert f"| 0.5 | {statistics.mean(lam[0.5]):.4g} ± {statistics.stdev(lam[0.5]):.2g} (n=2) |" in md
    assert "optimal value lies in the range of [0.3, 0.5]" in md
    for name in ("fig6_lam.png", "fig6_inner_steps.png"):
        assert f"report-figures/{name}" in md
        img = drawn(tmp_path / "report-figures" / name)
        assert img.shape[0] > 300 and img.shape[1] > 450


def drawn(path):
    """The PNG as an array; it is not blank (a plot was drawn)."""
    import matplotlib.image
    img = matplotlib.image.imread(str(path))
    assert img[..., :3].std() > 0.05
    return img


def test_lines_for_missing_unreadable_mixed_protocol_and_metric_variant(tmp_path):
    for s in (0, 1, 2):
        paper_run(tmp_path, f"c100-mona-{s}", "cifar100", "mona", s, 6.5 + s / 10)
    for s in (0, 1):
        paper_run(tmp_path, f"c100-ft-{s}", "cifar100", "finetune", s, 7.6 + s / 10)
    paper_run(tmp_path, "sph-orca-paper", "spherical", "orca", 0, 31.0)
    write_run(tmp_path, "sph-orca-strict", "spherical", "orca", 1, 35.0, protocol="strict", metric_variant="corrected")
    write_run(tmp_path, "ecg-mona", "ecg", "mona", 0, 0.31, metric="one_minus_f1", protocol="paper",
              metric_variant="corrected")
    write_run(tmp_path, "darcy-emb", "darcyflow", "emb", 0, 0.0081, metric="rel_l2", protocol="paper",
              metric_variant="corrected", variants={"paper": {"metric": "rel_l2_chunked", "test": 0.0079},
                                                    "corrected": {"metric": "rel_l2", "test": 0.0081}})
    write_run(tmp_path, "old/cosmic-mona", "cosmic", "mona", 0, 0.13, metric="one_minus_auroc_binarized")
    paper_run(tmp_path, "sat-mona-0", "satellite", "mona", 0, 11.5, n_train=900, n_val=0, n_test=100,
              test_best_on_test=10.25)
    write_run(tmp_path, "sat-mona-1", "satellite", "mona", 1, 12.5, protocol="paper", metric_variant="corrected")
    res = json.load(open(paper_run(tmp_path, "psicov-stage1", "psicov", "mona", 0, 1.0) + "/result.json"))
    for k in ("test", "test_last", "best_val", "best_epoch"):
        res.pop(k)
    json.dump(res, open(tmp_path / "psicov-stage1" / "result.json", "w"))
    os.makedirs(tmp_path / "broken")
    (tmp_path / "broken" / "result.json").write_text('{"task": "cifar100", "method":')
    with open(tmp_path / "c100-ft-1" / "metrics.jsonl", "a") as f:
        f.write("{half a line\n")
    g, md = build(tmp_path)
    notes = md.split("## What cannot be compared")[1].split("## Runs")[0]
    # unreadable files: one line each, naming the file
    assert f"`{tmp_path / 'broken' / 'result.json'}`: unreadable (JSONDecodeError" in notes
    assert f"`{tmp_path / 'c100-ft-1' / 'metrics.jsonl'}` line 4: unreadable JSON" in notes
    # missing runs (blank, never filled) and a missing seed
    assert "Table 2: no run (cell left blank) for `scratch`: all tasks;" in notes
    assert "Table 4: no run for any of its 16 cells" in notes
    assert "cifar100 / `finetune` lacks 2" in notes and "spherical / `orca` lacks 1, 2" in notes
    # mixed protocols: the cell holds the paper-protocol run only, and says so
    assert "Table 2 spherical / `orca`: mixed protocols; the cell shows only its 1 run(s) under the paper's " \
           "protocol and metric, not `sph-orca-strict`" in notes
    assert expected_cell([31.0], 29.85) in row_line(md, "ORCA (`orca`)")
    # metric variant: compared through variants.paper where it exists, flagged where it does not
    assert expected_cell([0.0079], 0.0075) in row_line(md, "Emb (`emb`)")
    assert expected_cell([0.31], 0.27, "M") in row_line(md, "MoNA (`mona`)")
    m_line = next(n for n in notes.splitlines() if n.startswith("- Table 2: [M] metric variant differs"))
    assert "ecg / `mona`" in m_line and "cosmic / `mona`" in m_line and "emb" not in m_line
    assert "Table 2 satellite / `mona`: mixed metric variants; the cell shows only its 1 run(s) under the paper's " \
           "protocol and metric, not `sat-mona-1`" in notes
    assert expected_cell([11.5], 11.13) in row_line(md, "MoNA (`mona`)")          # not averaged with 12.5
    assert "| `sat-mona-0` | satellite | mona | 0 | paper | 900/0/100 | error (paper) | 11.5 | 12 | 10.25 |" in md
    # an older result.json without protocol: strict, said so, marked not directly comparable
    assert "1 run(s) have no `protocol` key (older train.py): treated as strict" in notes
    assert expected_cell([0.13], 0.121, "PM") in row_line(md, "MoNA (`mona`)")
    assert "Table 2: [P] protocol is not the paper's" in notes and "cosmic / `mona`" in notes
    assert "run `psicov-stage1`: no finite test score" in notes
    assert "| `old/cosmic-mona` | cosmic | mona | 0 | strict (assumed) | ?/?/? | " \
           "one_minus_auroc_binarized (corrected) | 0.13 | 0.63 | – |" in md


def test_other_tables_and_unplaced_runs(tmp_path):
    paper_run(tmp_path, "sph-mona-vit", "spherical", "mona", 0, 34.0, cfg={"backbone": "vit_base"})
    paper_run(tmp_path, "fsd-orca-clip", "fsd50k", "orca", 0, 0.70, cfg={"backbone": "clip_vit_b16"},
              metric="one_minus_map")
    paper_run(tmp_path, "adv-orca", "advection", "orca", 0, 0.0101, metric="nrmse")
    paper_run(tmp_path, "nina-noinner", "ninapro", "mona", 0, 7.9, cfg={"no_inner_loss": True})
    paper_run(tmp_path, "c100-db", "cifar100", "mona", 0, 7.2, cfg={"outer_loss": "davies_bouldin"})
    paper_run(tmp_path, "c100-odd", "cifar100", "mona", 0, 7.0, cfg={"outer_loss": "supcon", "lam": 0.1})
    g, md = build(tmp_path)
    assert expected_cell([34.0], 33.34) in row_line(md, "MoNA, ViT-Base (86M), IN-22K (`mona --backbone vit_base`)")
    assert expected_cell([0.70], 0.69) in row_line(md, "ORCA, CLIP ViT-B/16 (86M), WIT-400M")
    assert expected_cell([0.0101], 0.0098) in md.split("## Table 4")[1].split("## Table 6")[0]
    assert expected_cell([7.9], 7.74) in row_line(md, "MoNA w/o L_inner in Eq. (5) (`mona --no-inner-loss`)")
    assert expected_cell([7.2], 7.09) in row_line(md, "Clustering Metric for L_outer")
    assert not g["tables"]["table2"]["cells"]           # none of these is a Table 2 run
    assert "run `c100-odd` (cifar100, mona, lam=0.1, outer_loss=supcon, backbone=swin_base) is in no paper " \
           "table or figure" in md


def test_exit_2_with_one_line_when_there_is_no_run(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: '{tmp_path / 'nope'}': no such folder\n"
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no run" in err
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "result.json").write_text("[1, 2")
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 unreadable" in err and "bad" in err and "Traceback" not in err
    assert not (tmp_path / report.REPORT_NAME).exists()


def test_heatmap_and_curves_are_drawn(tmp_path):
    paper_run(tmp_path, "c100-mona", "cifar100", "mona", 0, 5.0)         # 23% below the paper: blue
    paper_run(tmp_path, "c100-ft", "cifar100", "finetune", 0, 9.5)       # 24% above: red
    write_run(tmp_path, "orca-no-stage1-rows", "cifar100", "orca", 0, 6.53, protocol="paper", metric_variant="paper",
              history=[])
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out" / "summary")]) == 0
    figs = tmp_path / "out" / "report-figures"
    md = open(tmp_path / "out" / "summary").read()
    assert "![table2](report-figures/heatmap_table2.png)" in md and "[png](report-figures/curves/c100-mona.png)" in md
    img = drawn(figs / "heatmap_table2.png")[..., :3]
    r, b = img[..., 0], img[..., 2]
    assert ((b - r) > 0.4).sum() > 500 and ((r - b) > 0.4).sum() > 500     # diverging colours both ways
    assert sorted(os.listdir(figs / "curves")) == ["c100-ft.png", "c100-mona.png", "orca-no-stage1-rows.png"]
    for f in os.listdir(figs / "curves"):
        drawn(figs / "curves" / f)
    assert not os.path.exists(tmp_path / report.REPORT_NAME)


def test_end_to_end_train_demo_then_report(tmp_path):
    """train.py --demo for two methods (in parallel, one thread each), then `python report.py runs/`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    runs = tmp_path / "runs"
    procs = {m: subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--task", "cifar100", "--method", m,
                                  "--demo", "--no-progress", "--out", str(runs / f"cifar100-{m}"), "--seed", "3"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for m in ("finetune", "mona")}
    for m, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    done = subprocess.run([sys.executable, os.path.join(ROOT, "report.py"), str(runs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    md = open(runs / report.REPORT_NAME).read()
    for m, label, paper_value in (("finetune", "Finetuning (`finetune`)", 7.67), ("mona", "MoNA (`mona`)", 6.48)):
        res = json.load(open(runs / f"cifar100-{m}" / "result.json"))
        pv = (res.get("variants") or {}).get("paper") or {}
        value = pv.get("test", res["test"])
        cell = row_line(md, label).split(" | ")[1]
        assert cell.startswith(expected_cell([value], paper_value).split(" [")[0]), cell
        assert "S" in cell.split("[")[-1]              # --demo: tiny body, synthetic data: not the paper's setting
        assert f"| `cifar100-{m}` | cifar100 | {m} | 3 |" in md
        drawn(runs / "report-figures" / "curves" / f"cifar100-{m}.png")
    drawn(runs / "report-figures" / "heatmap_table2.png")


def test_report_out_in_the_repository_stays_out_of_commits():
    """The documented `report.py runs/ --out results/summary` writes into the repository: git ignores it (a top-level
    results/, with its report-figures/), while bench/results stays tracked; any other path inside the repository
    that git does not ignore gets a note, and the explicit --out is still honoured."""
    for path in ("results/summary", "results/report-figures/t.png"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
    assert subprocess.run(["git", "check-ignore", "-q", "bench/results/demo.md"], cwd=ROOT).returncode == 1
    assert report.untracked_note(os.path.join(ROOT, "results", "summary")) is None
    assert report.untracked_note(os.path.join(ROOT, "runs", "report.md")) is None
    note = report.untracked_note(os.path.join(ROOT, "my-summary"))
    assert note and "git does not ignore" in note
    assert report.untracked_note("/tmp/elsewhere/report.md") is None
