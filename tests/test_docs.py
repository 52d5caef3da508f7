"""Docs that run: README.md's Python blocks as written, every module's doctests, an example for every public
measure, and no reference to a file outside the repository."""
from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import workbench

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Their examples drive live widgets on the demo's runs (a kernel and trained runs); the dashboards are tested by
# test_dashboards*.py, the notebooks and the browser test.
SKIP_DOCTESTS = ("workbench.dashboards",)
MEASURE_PACKAGES = ("workbench.similarity", "workbench.spectrum", "workbench.transfer", "workbench.probing")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# ------------------------------------------------------------------------------------------------ README
def python_blocks(markdown: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", markdown, flags=re.S | re.M)


# Runs the blocks in order in one namespace, as a reader pasting them into one session would; on the first
# failure it prints the block's number and the traceback after a marker line and exits with status 1.
_DRIVER = """
import sys, traceback
blocks = {blocks!r}
namespace = {{"__name__": "__main__"}}
for i, block in enumerate(blocks):
    try:
        exec(compile(block, f"README.md python block {{i + 1}}", "exec"), namespace)
    except BaseException:
        print(f"@@FAILED {{i}}", flush=True)
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
"""


def test_python_blocks_finds_fenced_blocks():
    text = "x\n```python\na = 1\n```\n```bash\nmake\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


def test_make_demo_installs_what_readme_runs_next():
    """README's next step after `make demo` is `jupyter lab notebooks/`: `make demo` must install JupyterLab (the
    notebook extra), not leave it to `make test`. `make -n` prints the commands without running them."""
    import tomllib

    assert "jupyter lab notebooks/" in README.read_text(encoding="utf-8")
    dry = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    extras = re.findall(r"pip install [^\n]*-e \"?\.\[([^\]]*)\]", dry)
    assert any("notebook" in e.split(",") for e in extras), dry
    notebook = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["notebook"]
    assert any(dep.startswith("jupyterlab") for dep in notebook)


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path):
    """Every ```python block of README.md, in order, in a fresh interpreter with an empty run store."""
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    if any("export(" in b for b in blocks):
        from workbench.figures import find_chromium
        if find_chromium() is None:
            pytest.skip("README.md exports a figure: static export needs Chromium (apt-get install chromium)")
    env = dict(os.environ, WORKBENCH_HOME=str(tmp_path / "home"), MPLBACKEND="Agg",
               # one intra-op thread: on a shared 2-core machine OpenMP threads oversubscribe badly (tests/conftest.py)
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    work = tmp_path / "cwd"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", _DRIVER.format(blocks=blocks)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        match = re.search(r"^@@FAILED (\d+)$", out.stdout, flags=re.M)
        if match is None:
            pytest.fail(f"the README blocks did not run (exit {out.returncode}):\n{out.stdout[-3000:]}\n"
                        f"{out.stderr[-3000:]}")
        i = int(match.group(1))
        error = out.stdout[match.end():].strip()
        pytest.fail(f"README.md python block {i + 1} of {len(blocks)} fails as written:\n\n"
                    f"{textwrap.indent(blocks[i], '    ')}\n{error[-4000:]}")


# ------------------------------------------------------------------------------------------------ doctests
def module_names() -> list[str]:
    names = [workbench.__name__]
    names += [m.name for m in pkgutil.walk_packages(workbench.__path__, workbench.__name__ + ".")]
    return sorted(n for n in names if not n.startswith(SKIP_DOCTESTS))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", module_names())
def test_doctests(name, tmp_path, monkeypatch):
    """The examples in the module's docstrings run and print what they show."""
    monkeypatch.chdir(tmp_path)  # nothing an example writes lands in the repository
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name, module=module) if t.examples]
    report: list[str] = []
    failed = 0
    for test in tests:
        runner = doctest.DocTestRunner(optionflags=FLAGS)
        failed += runner.run(test, out=report.append).failed
    assert failed == 0, f"{failed} doctest example(s) of {name} failed:\n" + "".join(report)[-8000:]


def test_doctests_can_fail():
    """The runner used above reports a wrong expected output (so the doctest test is not vacuous)."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "bad", "bad.py", 0)
    report: list[str] = []
    assert doctest.DocTestRunner(optionflags=FLAGS).run(test, out=report.append).failed == 1
    assert "Expected:\n    3\nGot:\n    2" in "".join(report)


def test_every_public_measure_has_an_example():
    """Every function in ``__all__`` of the measure packages shows a runnable ``>>>`` example."""
    missing = []
    for package in MEASURE_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and ">>>" not in (inspect.getdoc(obj) or ""):
                missing.append(f"{package}.{name}")
    assert not missing, f"public measures without a '>>>' example in their docstring: {missing}"


# ---------------------------------------------------------------------------------- references out of the repo
_PATHLIKE = re.compile(r"[\w.~/-]*\.\./[\w.~/-]*")


def outside_references(text: str, where: Path, root: Path = ROOT) -> list[str]:
    """Paths with ``../`` in ``text`` (a file at ``where``) that resolve outside ``root``."""
    found = []
    for token in _PATHLIKE.findall(text):
        token = token.rstrip(".")  # a full stop after a path
        base = Path("/") if token.startswith("/") else where.parent
        target = Path(os.path.normpath(base / token))
        if target != root and root not in target.parents:
            found.append(token)
    return found


def repository_files() -> list[Path]:
    """Tracked and new (not ignored) files; every file below the root where git is not available."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        files = [ROOT / p for p in out.stdout.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
        files = [p for p in ROOT.rglob("*")
                 if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.parts)]
    return [f for f in files if f.is_file()]


def test_outside_references_detects_escapes():
    readme, notebook = ROOT / "README.md", ROOT / "notebooks" / "01.ipynb"
    assert outside_references("see ../shared/STUDIES.md.", readme) == ["../shared/STUDIES.md"]
    assert outside_references("see `../../shared/x.py`", notebook) == ["../../shared/x.py"]
    assert outside_references("[studies](../assets/STUDIES.md)", notebook) == []  # stays inside
    assert outside_references("/tmp/../etc/passwd", readme) == ["/tmp/../etc/passwd"]


def test_no_reference_to_a_file_outside_the_repository():
    """The project documents its own studies: no text file points outside the repository."""
    bad = []
    for path in repository_files():
        if path.resolve() == Path(__file__).resolve():
            continue  # this file spells out the references it looks for
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        rel = path.relative_to(ROOT)
        bad += [f"{rel}: {token}" for token in outside_references(text, path)]
        # the studies live in the repository: every mention names the in-repo copy
        bad += [f"{rel}: STUDIES.md without assets/" for m in re.finditer(r"(?<![\w/])STUDIES\.md", text)
                if rel != Path("assets/STUDIES.md")]
    assert (ROOT / "assets" / "STUDIES.md").is_file()
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)
