"""report.py: a runs folder -> the paper's tables and figures, side by side with the published numbers.

    python report.py runs/                      # writes the markdown report and report-figures/*.png into runs/
    python report.py runs/ --out results/summary --no-curves   # results/ at the top, like runs/, is git-ignored

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024, arXiv 2406.18864.
The published numbers are data in paper_results.json (each table cites its source); this file only reads runs.

Paper map
| paper                                                      | here                                              |
|------------------------------------------------------------|---------------------------------------------------|
| Tables 1, 2: NAS-Bench-360, default bodies (§4)             | "table2" (Table 1's ORCA, MoNA rows = Table 2's)  |
| Table 3: other bodies (config "backbone")                  | "table3" (its Swin-Base rows: default-body runs)  |
| Table 4: PDEBench / Table 6: loss ablations (config outer_loss, no_inner_loss) | "table4" / "table6"           |
| Fig. 6: λ (config "lam"), K (config "inner_steps") of mona  | fig6_lam.png, fig6_inner_steps.png                |
| each table / training curves from metrics.jsonl            | heatmap_<table>.png / curves/<run>.png            |

Reads every folder below the runs folder holding a result.json of train.py's `run`: task, method, metric, test (the
headline score, lower is better), test_last, config (resolved flags: seed, backbone, lam, inner_steps, outer_loss,
no_inner_loss, tiny, synthetic_data, max_train_samples) and, where present, protocol ("paper": train+val, last-epoch
test score, as the paper and ORCA; "strict" or absent: validation-selected), metric_variant ("paper" | "corrected";
absent = corrected), variants {"paper": {"metric", "test"}, ...}, test_best_on_test (a labelled extra only); and
metrics.jsonl beside it: stage-1 rows (losses, meta_ratio), stage-2 rows (train_loss, val_score).

A cell: mean ± sample standard deviation (ddof=1) over its runs (seeds), n; the paper's number; Δ = ours − paper and
Δ/|paper|. The value compared is the paper-definition metric (variants.paper.test, or test when metric_variant is
"paper"). Marks: P = not the paper's protocol, M = metric variant differs, S = setting not the paper's (tiny body,
synthetic data, subsampled training set). A cell without a run stays blank.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_results.json")
REPORT_NAME = "report.md"                    # written into the runs folder unless --out says otherwise
MONA_DEFAULTS = dict(lam=0.5, inner_steps=1, outer_loss="align_uniform", no_inner_loss=False)  # train.py's defaults
ABLATION = {("align_uniform", False): "default", ("align_uniform", True): "no_inner",        # Table 6 rows
            ("supcon", False): "supcon", ("davies_bouldin", False): "davies_bouldin"}
MARKS = {"P": "protocol is not the paper's (strict: validation-selected model), not directly comparable",
         "M": "metric variant differs from the paper's (result.json has no paper-definition value)",
         "S": "setting is not the paper's (tiny body / synthetic data / subsampled training set)"}


class ReportError(Exception):
    """An expected problem (no folder, no run): one line, exit 2."""


def load_paper(path: str = PAPER_FILE) -> dict:
    with open(path) as f:
        return json.load(f)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cfg(cfg: dict, key: str):
    """A MoNA setting of a run's config; absent or null = train.py's default."""
    return MONA_DEFAULTS[key] if cfg.get(key) is None else cfg[key]


def _seed_key(s):
    return (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s))


def _task_key(name, paper: dict) -> str:
    k, al = str(name).strip().lower().replace("_", "-"), paper["task_aliases"]
    return al.get(k.replace("-", ""), al.get(k, k))


def _read_metrics(path: str, problems: list) -> list:
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            for i, line in enumerate(f, 1):
                try:
                    rows += [json.loads(line)] if line.strip() else []
                except ValueError:
                    problems.append(f"`{path}` line {i}: unreadable JSON; that line is skipped")
    return [r for r in rows if isinstance(r, dict)]


def signature(cfg: dict, method: str, paper: dict) -> dict:
    """Which paper setting a run is: its backbone and its MoNA variant (default, Table 6 row, sweep, other)."""
    backbone, variant = cfg.get("backbone") or "default", "default"
    if method == "mona":
        variant = ABLATION.get((_cfg(cfg, "outer_loss"), bool(_cfg(cfg, "no_inner_loss"))), "other")
        if float(_cfg(cfg, "lam")) != MONA_DEFAULTS["lam"] or int(_cfg(cfg, "inner_steps")) != 1:
            variant = "sweep" if variant == "default" else "other"
    return dict(method=method, backbone=backbone, variant=variant,
                backbone_default=backbone == "default" or backbone in paper["default_backbones"])


def load_runs(root: str, paper: dict | None = None) -> tuple[list, list]:
    """Every folder below `root` with a result.json -> (runs, problem lines). A bad file is a line, not an error."""
    paper = paper or load_paper()
    runs, problems = [], []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        if "result.json" not in files:
            continue
        path = os.path.join(d, "result.json")
        try:
            with open(path) as f:
                res = json.load(f)
            if not isinstance(res, dict) or "task" not in res or "method" not in res:
                raise ValueError("not a train.py result (no task / method)")
            cfg = res.get("config") if isinstance(res.get("config"), dict) else {}
            protocol = res.get("protocol") or cfg.get("protocol")
            variants = res.get("variants") if isinstance(res.get("variants"), dict) else {}
            pv = variants.get("paper") if isinstance(variants.get("paper"), dict) else {}
            mv = res.get("metric_variant") or "corrected"
            value, paper_metric = (pv["test"], True) if _num(pv.get("test")) else (res.get("test"), mv == "paper")
            setting = [k for k in ("tiny", "synthetic_data") if cfg.get(k)]
            setting += [f"max_train_samples={cfg['max_train_samples']}"] if cfg.get("max_train_samples") else []
            runs.append(dict(
                name=os.path.relpath(d, root), task=_task_key(res["task"], paper), method=str(res["method"]),
                seed=cfg.get("seed"), config=cfg, result=res, protocol=protocol or "strict",
                protocol_assumed=not protocol, metric_variant=mv, value=value if _num(value) else None,
                metric_ok=paper_metric, setting=setting, sig=signature(cfg, str(res["method"]), paper),
                history=_read_metrics(os.path.join(d, "metrics.jsonl"), problems)))
        except (ValueError, TypeError, AttributeError, OSError) as e:
            problems.append(f"`{path}`: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80]}); skipped")
    return runs, problems


def summarise(runs: list, paper_value=None) -> dict:
    """One cell: mean ± sample std (ddof=1) over the runs, Δ to the paper. A cell mixing protocols or metric
    variants keeps only its runs under the paper's protocol / metric (never averages two definitions)."""
    use, mixed = runs, []
    for what, ok in (("protocols", lambda r: r["protocol"] == "paper"), ("metric variants", lambda r: r["metric_ok"])):
        if 0 < sum(map(ok, use)) < len(use):
            use, mixed = [r for r in use if ok(r)], mixed + [what]
    vals = [float(r["value"]) for r in use]
    c = dict(runs=use, dropped=[r for r in runs if r not in use], mixed=mixed, n=len(vals), values=vals,
             mean=statistics.mean(vals), std=statistics.stdev(vals) if len(vals) > 1 else None,
             seeds=sorted((r["seed"] for r in use), key=_seed_key), paper=paper_value, diff=None, rel=None)
    c["marks"] = "".join(m for m, bad in (("P", any(r["protocol"] != "paper" for r in use)),
                                          ("M", any(not r["metric_ok"] for r in use)),
                                          ("S", any(r["setting"] for r in use))) if bad)
    if _num(paper_value):
        c["diff"] = c["mean"] - paper_value
        c["rel"] = c["diff"] / abs(paper_value) if paper_value else None
    return c


def _table_notes(title: str, spec: dict, cells: dict, seeds: set) -> list:
    notes, rows = [], [(i, r) for i, r in enumerate(spec["rows"]) if r["match"]]
    empty = [(r["cli"], [t for t in spec["columns"] if (i, t) not in cells]) for i, r in rows]
    if not cells:
        return [f"{title}: no run for any of its {len(rows) * len(spec['columns'])} cells"]
    if any(ts for _, ts in empty):
        notes.append(f"{title}: no run (cell left blank) for " + "; ".join(
            f"`{cli}`: " + ("all tasks" if len(ts) == len(spec["columns"]) else ", ".join(ts))
            for cli, ts in empty if ts))
    lack = []
    for (i, t), c in cells.items():
        where, have = f"{t} / `{spec['rows'][i]['cli']}`", [str(s) for s in c["seeds"]]
        if c["dropped"]:
            notes.append(f"{title} {where}: mixed {' and '.join(c['mixed'])}; the cell shows only its {c['n']} run(s) "
                         "under the paper's protocol and metric, not "
                         + ", ".join(f"`{r['name']}`" for r in c["dropped"]))
        if len(set(have)) < len(have):
            notes.append(f"{title} {where}: the same seed in several runs (seeds {', '.join(have)}); all are counted")
        if seeds - set(have):
            lack.append(f"{where} lacks {', '.join(sorted(seeds - set(have), key=_seed_key))}")
    if lack:
        notes.append(f"{title}: missing seed(s) (its runs use seeds {', '.join(sorted(seeds, key=_seed_key))}): "
                     + "; ".join(lack))
    for m, text in MARKS.items():
        bad = [f"{t} / `{spec['rows'][i]['cli']}`" for (i, t), c in cells.items() if m in c["marks"]]
        notes += [f"{title}: [{m}] {text}: " + ", ".join(bad)] if bad else []
    return notes


def group(runs: list, paper: dict | None = None, problems: list = ()) -> dict:
    """Runs -> the paper's tables (cells keyed (row index, task)), the Fig. 6 sweeps and the notes to print."""
    paper = paper or load_paper()
    notes, placed, tables, fig6 = list(problems), set(), {}, {}
    scored = [r for r in runs if r["value"] is not None]
    notes += [f"run `{r['name']}`: no finite test score in result.json (stage 1 only, or failed); skipped"
              for r in runs if r["value"] is None]
    if any(r["protocol_assumed"] for r in runs):
        notes.append(f"{sum(r['protocol_assumed'] for r in runs)} run(s) have no `protocol` key (older train.py): "
                     "treated as strict (validation-selected), metric variant 'corrected' unless stated")
    for tid, spec in paper["tables"].items():
        if not spec.get("match"):
            continue                                   # Table 1: data only (its ORCA / MoNA rows are Table 2's)
        cells, seeds = {}, set()
        for i, row in enumerate(spec["rows"]):
            for j, task in enumerate(spec["columns"]):
                mine = [r for r in scored if row["match"] and r["task"] == task
                        and all(r["sig"].get(k) == v for k, v in {**spec["match"], **row["match"]}.items())]
                if mine:
                    placed.update(id(r) for r in mine)
                    cells[i, task] = summarise(mine, row["values"][j])
                    seeds.update(str(s) for s in cells[i, task]["seeds"])
        tables[tid] = dict(spec=spec, cells=cells, seeds=seeds)
        notes += _table_notes(spec["source"].split(", ")[-1], spec, cells, seeds)
    for param, other in (("lam", "inner_steps"), ("inner_steps", "lam")):
        swept = [r for r in scored if r["method"] == "mona" and r["sig"]["variant"] in ("default", "sweep")
                 and r["sig"]["backbone_default"] and float(_cfg(r["config"], other)) == MONA_DEFAULTS[other]]
        for task in sorted({r["task"] for r in swept if float(_cfg(r["config"], param)) != MONA_DEFAULTS[param]}):
            pts = {}
            for r in (r for r in swept if r["task"] == task):
                pts.setdefault(float(_cfg(r["config"], param)), []).append(r)
                placed.add(id(r))
            fig6.setdefault(param, {})[task] = {x: summarise(rs) for x, rs in sorted(pts.items())}
            notes += [f"Fig. 6 {param}={x:g} {task}: mixed {' and '.join(c['mixed'])}; the point shows only its "
                      f"{c['n']} run(s) under the paper's protocol and metric"
                      for x, c in fig6[param][task].items() if c["dropped"]]
    for r in (r for r in scored if id(r) not in placed):
        how = [f"{k}={_cfg(r['config'], k)}" for k in MONA_DEFAULTS if r["method"] == "mona"
               and _cfg(r["config"], k) != MONA_DEFAULTS[k]] + [f"backbone={r['sig']['backbone']}"]
        notes.append(f"run `{r['name']}` ({r['task']}, {r['method']}, {', '.join(how)}) is in no paper table or "
                     "figure; listed under Runs only")
    return dict(tables=tables, fig6=fig6, notes=notes, runs=runs)


def cell_text(c: dict | None) -> str:
    """`mean ± std (n=k) · paper p · Δ d (r%) [marks]`; `mean (n=1)` for one run; a dash for no run."""
    if c is None:
        return "— (no run)"
    s = f"{c['mean']:.4g} ± {c['std']:.2g} (n={c['n']})" if c["std"] is not None else f"{c['mean']:.4g} (n=1)"
    if c["diff"] is not None:
        s += f" · paper {c['paper']:.4g} · Δ {c['diff']:+.3g}"
        s += f" ({c['rel']:+.1%})" if c["rel"] is not None else ""
    return s + (f" [{','.join(c['marks'])}]" if c["marks"] else "")


def _col(task: str, paper: dict) -> str:
    t = paper["tasks"].get(task, {})
    return f"{t.get('paper_name', task)} {t.get('metric', '')}".strip()


def render_markdown(g: dict, paper: dict | None = None, root: str = "runs", figures: dict | None = None) -> str:
    paper, figures = paper or load_paper(), figures or {}
    out = ["# MoNA runs vs. the paper\n", f"Runs folder `{root}`: {len(g['runs'])} run(s). Published numbers: "
           f"`paper_results.json`, from {paper['paper']}.\n",
           "Cell: ours as mean ± sample standard deviation (ddof=1) over n runs (seeds) · the paper's number · "
           "Δ = ours − paper (Δ/|paper|). Lower is better everywhere; the paper reports one number per cell (no "
           "spread). Marks: " + "; ".join(f"**{k}** = {v}" for k, v in MARKS.items()) + ".\n"]
    for tid, t in g["tables"].items():
        spec = t["spec"]
        out += [f"## {spec['source'].split(', ')[-1]}: {spec['title']}\n\nSource: {spec['source']}.\n",
                "| method | " + " | ".join(_col(c, paper) for c in spec["columns"]) + " |\n|---|"
                + "---|" * len(spec["columns"])]
        out += [f"| {row['label']} (`{row['cli']}`) | " + " | ".join(cell_text(t["cells"].get((i, c)))
                                                              for c in spec["columns"]) + " |"
                for i, row in enumerate(spec["rows"]) if row["match"]]
        only = [r["label"] for r in spec["rows"] if not r["match"]]
        out.append((f"\n{spec['note']}" if spec.get("note") else "")
                   + (f"\nPaper-only rows (baselines not implemented here): {', '.join(only)}." if only else "")
                   + (f"\n\n![{tid}]({figures[tid]})" if tid in figures else "") + "\n")
    f6 = paper["figure6"]
    out.append(f"## Fig. 6: λ and K sweeps of MoNA\n\nSource: {f6['source']}. The paper gives no numbers for Fig. 6; "
               f"its text says: λ: \"{f6['lam']['text']}\" K: \"{f6['inner_steps']['text']}\"\n")
    for param, per_task in g["fig6"].items():
        head = {"lam": "λ (`--lam`)", "inner_steps": "K (`--inner-steps`)"}[param]
        out.append(f"| {head} | " + " | ".join(_col(t, paper) for t in per_task) + " |\n|---|" + "---|" * len(per_task))
        out += [f"| {x:g} | " + " | ".join(cell_text(pts.get(x)) for pts in per_task.values()) + " |"
                for x in sorted({x for pts in per_task.values() for x in pts})]
        out.append(f"\n![fig6 {param}]({figures['fig6_' + param]})\n" if "fig6_" + param in figures else "")
    if not g["fig6"]:
        out.append("No sweep: no mona run with a non-default `--lam` or `--inner-steps`.\n")
    out.append("## What cannot be compared, and what is missing\n")
    out += [f"- {n}" for n in g["notes"]] or ["- nothing: every cell is comparable"]
    out.append("\n## Runs\n\n| run | task | method | seed | protocol | n train/val/test | metric (variant) | test | "
               "test_last | test_best_on_test (optimistic, ORCA-style; never the headline) | curves |\n"
               + "|---" * 11 + "|")
    fmt, curves = (lambda v: f"{v:.4g}" if _num(v) else "–"), figures.get("curves", {})
    for r in g["runs"]:
        res = r["result"]
        cols = [f"`{r['name']}`", r["task"], r["method"], r["seed"],
                r["protocol"] + " (assumed)" * r["protocol_assumed"],
                "/".join(str(res.get(k, "?")) for k in ("n_train", "n_val", "n_test")),
                f"{res.get('metric')} ({r['metric_variant']})", *(fmt(res.get(k)) for k in ("test", "test_last",
                                                                                           "test_best_on_test")),
                f"[png]({curves[r['name']]})" if r["name"] in curves else "–"]
        out.append("| " + " | ".join(map(str, cols)) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Figures (matplotlib imported lazily; Agg canvas: no display, no pyplot state)
# ---------------------------------------------------------------------------------------------------------------
def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_heatmap(table: dict, paper: dict, path: str) -> str:
    """(ours − paper)/|paper| per cell, diverging colours centred at 0 (blue: lower than the paper, i.e. better)."""
    import numpy as np
    from matplotlib.patches import Rectangle
    spec = table["spec"]
    rows, cols = [(i, r) for i, r in enumerate(spec["rows"]) if r["match"]], spec["columns"]
    cell = {(a, b): table["cells"].get((i, t)) for a, (i, _) in enumerate(rows) for b, t in enumerate(cols)}
    rel = np.array([[np.nan if not cell[a, b] or cell[a, b]["rel"] is None else cell[a, b]["rel"]
                     for b in range(len(cols))] for a in range(len(rows))])
    lim = max(min(float(np.nanmax(np.abs(rel))), 1.0) if np.isfinite(rel).any() else 0.1, 1e-9)  # clip at ±100%
    fig = _figure((max(9.0, 1.2 * len(cols) + 5), 0.55 * len(rows) + 2))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(rel), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (a, b), c in cell.items():
        if c is None:
            ax.add_patch(Rectangle((b - .5, a - .5), 1, 1, facecolor="0.93", hatch="//", edgecolor="0.75"))
            ax.text(b, a, "no run", ha="center", va="center", fontsize=7, color="0.45")
            continue
        txt = (f"{c['rel']:+.1%}" if c["rel"] is not None else "–") + f"\nn={c['n']}" + (
            f" [{c['marks']}]" if c["marks"] else "")
        dark = c["rel"] is not None and abs(c["rel"]) > 0.6 * lim
        ax.text(b, a, txt, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), [paper["tasks"][t]["paper_name"] for t in cols], rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(rows)), [r["label"] for _, r in rows], fontsize=8)
    cb = fig.colorbar(im, ax=ax, format=lambda v, _: f"{v:+.0%}")
    cb.set_label("(ours − paper) / |paper|; < 0: ours lower (better)", fontsize=8)
    ax.set_title(f"{spec['source']}: ours relative to the paper\nmarks: P protocol, M metric variant, S setting "
                 "differ from the paper's", fontsize=9)
    return _save(fig, path)


def plot_sweep(per_task: dict, param: str, paper: dict, path: str) -> str:
    """Fig. 6: test score (mean ± sample std over seeds) against λ or K, one line per task."""
    fig = _figure((5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for task, pts in per_task.items():
        xs = list(pts)
        ax.errorbar(xs, [pts[x]["mean"] for x in xs], yerr=[pts[x]["std"] or 0 for x in xs], marker="o",
                    capsize=3, label=_col(task, paper))
    info = paper["figure6"][param]
    if info.get("optimal_range"):
        ax.axvspan(*info["optimal_range"], color="0.85", label="paper: optimal range (text, §4.4)")
    if info.get("paper_choice") is not None:
        ax.axvline(info["paper_choice"], color="0.5", ls="--", label="paper's choice (§4.4)")
    ax.set_xlabel({"lam": "λ (--lam)", "inner_steps": "K inner steps (--inner-steps)"}[param])
    if param == "inner_steps":
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("test score, mean ± sample std (lower is better)", fontsize=8)
    ax.set_title(f"Fig. 6{'(a)(b)' if param == 'lam' else '(c)'}: ours (the paper plots accuracy, gives no values)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_curves(run: dict, path: str) -> str:
    """Training curves of one run: stage-1 losses and meta_ratio; stage-2 losses and validation score."""
    s1 = [r for r in run["history"] if r.get("stage") == 1]
    s2 = [r for r in run["history"] if r.get("stage") == 2]
    fig = _figure((9, 6))
    panels = [(s1, ("inner_loss", "outer_loss", "otdd"), "stage 1: losses"),
              (s1, ("meta_ratio",), "stage 1: meta_ratio = ‖meta term‖ / ‖∇L_inner‖"),
              (s2, ("train_loss", "val_loss"), "stage 2: losses"),
              (s2, ("val_score", "test_score"),
               f"stage 2: score ({run['result'].get('metric', '?')}, lower is better)")]
    for n, (rs, keys, title) in enumerate(panels, 1):
        ax = fig.add_subplot(2, 2, n)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        for k in keys:
            pts = [(r["epoch"], r[k]) for r in rs if _num(r.get(k)) and _num(r.get("epoch"))]
            ax.plot(*zip(*pts), marker="o", ms=3, label=k) if pts else None
        if n == 4 and _num(run["result"].get("test")):
            ax.axhline(run["result"]["test"], color="k", ls="--", lw=1, label="test (headline)")
        if ax.lines:
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no stage-{1 + (n > 2)} rows" if not rs else "not logged", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{run['name']}: {run['task']} / {run['method']} (seed {run['seed']})", fontsize=10)
    return _save(fig, path)


def write_figures(g: dict, paper: dict, folder: str, curves: bool = True) -> dict:
    """All PNGs into `folder`; returns their paths relative to the folder holding `folder` (the report's)."""
    base, paths = os.path.basename(os.path.normpath(folder)), {"curves": {}}
    for tid, t in g["tables"].items():
        if t["cells"]:
            plot_heatmap(t, paper, os.path.join(folder, f"heatmap_{tid}.png"))
            paths[tid] = f"{base}/heatmap_{tid}.png"
    for param, per_task in g["fig6"].items():
        plot_sweep(per_task, param, paper, os.path.join(folder, f"fig6_{param}.png"))
        paths["fig6_" + param] = f"{base}/fig6_{param}.png"
    for r in g["runs"] if curves else []:
        name = "run" if r["name"] == "." else r["name"].replace(os.sep, "__").replace(" ", "_")
        plot_curves(r, os.path.join(folder, "curves", name + ".png"))
        paths["curves"][r["name"]] = f"{base}/curves/{name}.png"
    return paths


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Lay out the runs of a folder as the MoNA paper's Tables 1-4 and 6 and "
                                            "Fig. 6, beside the published numbers (paper_results.json).")
    p.add_argument("runs", help="folder searched recursively for result.json (train.py --out folders)")
    p.add_argument("--out", default=None, help=f"markdown file to write (default <runs>/{REPORT_NAME}); the PNGs go "
                                               "to report-figures/ beside it")
    p.add_argument("--paper", default=PAPER_FILE, help="the published numbers (JSON)")
    p.add_argument("--no-figures", action="store_true", help="markdown only, no PNG")
    p.add_argument("--no-curves", action="store_true", help="no per-run training-curve PNGs")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if not os.path.isdir(args.runs):
            raise ReportError(f"{args.runs!r}: no such folder")
        paper = load_paper(args.paper)
        runs, problems = load_runs(args.runs, paper)
        if not runs:
            raise ReportError(f"{args.runs!r} holds no run (no folder with a readable result.json"
                              + (f"; {len(problems)} unreadable, e.g. {problems[0]}" if problems else "") + ")")
        g = group(runs, paper, problems)
        out = args.out or os.path.join(args.runs, REPORT_NAME)
        folder = os.path.join(os.path.dirname(os.path.abspath(out)), "report-figures")
        figs = {} if args.no_figures else write_figures(g, paper, folder, curves=not args.no_curves)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(render_markdown(g, paper, args.runs, figs))
    except (ReportError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(runs)} run(s) -> {out}" + (f" and {folder}{os.sep}" if figs else ""))
    note = untracked_note(out)
    if note:
        print(note, file=sys.stderr)
    return 0


def untracked_note(path: str) -> str | None:
    """A note when `path` lies inside this repository where git neither tracks nor ignores it (a report would show
    up in `git status`, ready to be committed by mistake); runs/ and a top-level results/ are ignored (.gitignore).
    The report is still written where asked: an explicit --out is honoured."""
    import subprocess
    root = os.path.dirname(os.path.abspath(__file__))
    full = os.path.abspath(path)
    if os.path.commonpath([root, full]) != root:
        return None
    try:
        r = subprocess.run(["git", "check-ignore", "-q", full], cwd=root, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 1:                          # 0: ignored; 128: not a git checkout, or git failed
        return None
    return (f"note: {path} is inside the repository and git does not ignore it; write reports under runs/ or "
            f"results/ (both git-ignored) to keep them out of commits")


if __name__ == "__main__":
    sys.exit(main())
