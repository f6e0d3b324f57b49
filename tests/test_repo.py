"""Repository hygiene (the design card: flat modules of a few hundred lines, each opening with its paper map,
read side by side with the paper): no file names a document that the repository does not contain; the top
level holds the modules a reader of the paper opens (at most 14), everything else sits in readers/ (dataset
files) and support/ (run infrastructure); no module is over about 600 lines; every top-level module's docstring
names the paper and maps it; no two modules import each other, even through others, and none imports train.py."""
import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 600
MAX_TOP_LEVEL = 14
FOLDERS = ("readers", "support")          # the only packages beside the top-level modules
WRITTEN = {"report.md", "results.md", "sweep.md", "probe.md", "regime.md"}   # written by report.py and bench/, not documents


def repo_files() -> list[str]:
    """Files under version control plus new, not-ignored ones (what a clone of the branch would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(p for p in out if os.path.isfile(os.path.join(ROOT, p)))


def top_level_modules() -> list[str]:
    return [p for p in repo_files() if p.endswith(".py") and "/" not in p]


def project_modules() -> list[str]:
    """The importable modules of the project: the top level and the two folders (not tests/, not bench/)."""
    return [p for p in repo_files() if p.endswith(".py") and ("/" not in p or p.split("/")[0] in FOLDERS)]


def module_name(path: str) -> str:
    return path[:-3].replace("/", ".").removesuffix(".__init__")


def imports_of(path: str, names: set, root: str = ROOT) -> set:
    """Project modules that `path` imports anywhere in it (top of the file or inside a function)."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n in names} - {module_name(path)}


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


def test_the_top_level_is_what_a_reader_of_the_paper_opens():
    modules = top_level_modules()
    assert len(modules) <= MAX_TOP_LEVEL, f"{len(modules)} top-level modules: {modules}"
    design = {"embedders", "predictors", "backbones", "losses", "meta", "data", "train", "discrepancy", "probe"}
    assert design <= {m[:-3] for m in modules}
    folders = {p.split("/")[0] for p in repo_files() if p.endswith(".py") and "/" in p} - {"tests", "bench"}
    assert folders == set(FOLDERS), folders


def test_no_import_circles_and_nothing_imports_train():
    paths = project_modules()
    names = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, names) for p in paths}
    assert not [m for m, deps in graph.items() if "train" in deps], "only the command line may import train.py"

    def cycle_from(start):                  # depth-first search for a path back to `start`
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None
    circles = [" -> ".join(c) for m in sorted(graph) if (c := cycle_from(m))]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_import_scan_sees_lazy_imports(tmp_path):
    # an import inside a function counts: a circle through one still ties two modules together
    (tmp_path / "a.py").write_text("import os\n\ndef f():\n    from support import cli\n    import b\n")
    assert imports_of("a.py", {"support.cli", "a", "b"}, root=str(tmp_path)) == {"support.cli", "b"}


@pytest.mark.parametrize("module", project_modules())
def test_module_size(module):
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        n = f.read().count("\n")
    assert n <= MAX_LINES, f"{module} has {n} lines (the design card asks for a few hundred, at most ~{MAX_LINES})"


@pytest.mark.parametrize("module", top_level_modules())
def test_paper_map(module):
    """The top-level modules implement the paper: each opens with its paper map. (readers/ and support/ hold
    file formats and run infrastructure; they are not asked for one.)"""
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        src = f.read()
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
