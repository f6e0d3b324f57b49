"""Repository hygiene (the design card: flat modules of a few hundred lines, each opening with its paper map,
read side by side with the paper): no file names a document that the repository does not contain, no
top-level module is over about 600 lines, and every module's docstring names the paper and maps it."""
import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 600
WRITTEN = {"report.md", "results.md", "sweep.md", "probe.md"}   # written by report.py and bench/, not documents


def repo_files() -> list[str]:
    """Files under version control plus new, not-ignored ones (what a clone of the branch would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(p for p in out if os.path.isfile(os.path.join(ROOT, p)))


def top_level_modules() -> list[str]:
    return [p for p in repo_files() if p.endswith(".py") and "/" not in p]


def test_every_cited_document_is_in_the_repository():
    files = set(repo_files())
    names = {os.path.basename(p) for p in files} | WRITTEN
    cited = re.compile(r"[\w./-]*\b[\w-]+\.md\b")              # a name ending in .md, with or without a path
    missing = []
    for path in files:
        if not path.endswith((".py", ".md", ".txt", ".ini", ".cfg", ".toml", ".json", ".yaml", ".yml")) \
                and not path.startswith(".ci/"):
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                for m in cited.finditer(line):
                    ref = m.group(0)
                    if ref.startswith(("http", "www.")) or "://" in line[max(0, m.start() - 80):m.start()]:
                        continue                            # a URL (e.g. a GitHub README) can be opened
                    if os.path.basename(ref) not in names:
                        missing.append(f"{path}:{i}: {ref}")
                if re.search(r"\.\./shared/|shared[/]reference", line):
                    missing.append(f"{path}:{i}: {line.strip()[:80]}")
    assert not missing, "documents the repository does not contain:\n" + "\n".join(missing)


def test_the_checker_finds_a_missing_document(tmp_path):
    # the pattern itself must catch the kind of citation this test exists for
    cited = re.compile(r"[\w./-]*\b[\w-]+\.md\b")
    doc = "notes" + ".md"                                   # built here so this file does not cite it
    assert cited.search(f"see {doc} §2.5").group(0) == doc
    assert cited.search(f"(../elsewhere/{doc})").group(0) == f"../elsewhere/{doc}"


@pytest.mark.parametrize("module", top_level_modules())
def test_module_size_and_paper_map(module):
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        src = f.read()
    n = src.count("\n")
    assert n <= MAX_LINES, f"{module} has {n} lines (the design card asks for a few hundred, at most ~{MAX_LINES})"
    doc = ast.get_docstring(ast.parse(src)) or ""
    assert "2406.18864" in doc, f"{module}'s docstring does not name the paper (arXiv 2406.18864)"
    assert re.search(r"paper map", doc, re.I), f"{module}'s docstring has no paper map"


def test_readme_module_map_matches_the_files():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([\w]+\.py)`", section))
    assert listed == set(top_level_modules()), (f"README module map lists {sorted(listed)}, "
                                                f"the repository has {top_level_modules()}")


def test_the_suite_runs_single_threaded():
    import torch
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
