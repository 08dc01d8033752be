"""The set-up files agree with each other: pyproject.toml, environment.yml, README, CI."""

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ.
CONDA_NAMES = {"torch": "pytorch", "jupyterlab-rise": "jupyterlab_rise"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", requirement)
    assert match, requirement
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(
        _split(r) for r in project["dependencies"] + project["optional-dependencies"]["lab"]
    )
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    wanted["python"] = project["requires-python"]
    conda = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = re.fullmatch(r"\s+-\s+(\S+)", line)
        if item and item.group(1) not in ("conda-forge", "pip"):
            name, bound = _split(item.group(1))
            conda[name] = bound
    assert conda == wanted


def test_every_dependency_has_a_lower_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    assert all(">=" in r.split(";")[0] for r in every), every


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make lab" in readme
    assert re.search(r"^make test$", ci, re.MULTILINE)


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    missing = [n for n in notebooks if n not in readme]
    assert not missing, f"README.md does not mention {missing}"
