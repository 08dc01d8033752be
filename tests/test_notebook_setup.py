"""A notebook outside `make lab`: its setup cell says what to run, or finds the checkout.

Every notebook's first code cell is the same setup cell. Where ``resnet_lessons`` cannot
be imported it stops with one short message (how to install the package) instead of a
traceback; in the course's folder without an install it puts the checkout on the path (and
on ``PYTHONPATH``, for the processes notebook 09 starts) and prints nothing.

The notebooks' first cells run here in a real Jupyter kernel that cannot see this
environment's install of the package: Python starts with ``-S`` (no ``site``, so the
editable install's ``.pth`` file is never read) and gets only the site-packages folders
back, so torch, IPython and ipykernel import as usual and ``resnet_lessons`` does not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SITE_PACKAGES = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
BARE_PYTHON = f"import sys; sys.path[1:1] = {SITE_PACKAGES!r}"


def _code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_every_notebook_starts_with_the_same_setup_cell():
    assert len(NOTEBOOKS) == 9, f"expected the nine notebooks, found {len(NOTEBOOKS)}"
    first = {path.name: _code_cells(path)[0] for path in NOTEBOOKS}
    sources = {name: _source(cell) for name, cell in first.items()}
    reference = sources[NOTEBOOKS[0].name]
    assert reference.startswith("# Setup:"), f"{NOTEBOOKS[0].name}: no setup cell first"
    differ = [name for name, source in sources.items() if source != reference]
    assert not differ, f"the setup cell differs from {NOTEBOOKS[0].name}'s in {differ}"
    for name, cell in first.items():
        assert cell["outputs"] == [], f"{name}: the setup cell has saved outputs"
        assert cell["metadata"].get("slideshow") == {"slide_type": "skip"}, name
        assert "remove-cell" in cell["metadata"].get("tags", []), f"{name}: shown in the book"
    lines = reference.splitlines()
    assert len(lines) <= 16, f"the setup cell grew to {len(lines)} lines; keep it short"


@pytest.fixture
def bare_kernel(tmp_path, monkeypatch):
    """A kernel spec whose Python cannot import this environment's ``resnet_lessons``."""
    from jupyter_client.kernelspec import KernelSpecManager

    probe = f"{BARE_PYTHON}; import importlib.util as u; print(u.find_spec('resnet_lessons'))"
    found = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    if found.stdout.strip() != "None":
        pytest.skip(
            "resnet_lessons is installed into site-packages itself (not editable, as make "
            f"test installs it), so no kernel here can be without it: {found.stdout.strip()}"
        )
    launch = f"{BARE_PYTHON}; from ipykernel.kernelapp import launch_new_instance as l; l()"
    spec = tmp_path / "kernels" / "bare"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-S", "-c", launch, "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "bare", "language": "python"})
    )
    for name in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "MPLCONFIGDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])


def _run_first_cells(notebook: Path, count: int, cwd: Path, specs) -> tuple[dict, Exception | None]:
    """Run the first ``count`` code cells of ``notebook`` in the bare kernel, in ``cwd``."""
    import nbformat
    from jupyter_client import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"][:count]
    for cell in cells:  # nothing saved: what the cells show comes from this run
        cell.outputs, cell.execution_count = [], None
    nb.cells = cells
    km = KernelManager(kernel_name="bare", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(cwd)}})
    error = None
    try:
        client.execute()
    except Exception as err:  # nbclient's CellExecutionError: the cell that failed
        error = err
    return nb, error


@pytest.mark.slow
def test_without_the_package_the_setup_cell_says_what_to_run(tmp_path, bare_kernel):
    alone = tmp_path / "downloads"  # one notebook on its own, no checkout around it
    alone.mkdir()
    notebook = shutil.copy(NOTEBOOKS[0], alone)
    nb, error = _run_first_cells(Path(notebook), 3, alone, bare_kernel)
    setup, imports = nb.cells[0], nb.cells[1]
    assert error is not None, "the setup cell should stop the notebook when the package is missing"
    errors = [o for o in setup.outputs if o.output_type == "error"]
    assert len(errors) == 1, f"expected one error from the setup cell, got {setup.outputs}"
    shown = "\n".join(errors[0].traceback)  # what Jupyter shows under the cell
    assert errors[0].traceback == [errors[0].evalue], f"more than the message is shown:\n{shown}"
    assert "resnet_lessons is not installed" in shown and "pip install -e ." in shown, shown
    assert "%pip install" in shown, shown
    assert "Traceback" not in shown and "File " not in shown, f"a traceback is shown:\n{shown}"
    assert len(shown) < 400, f"the message should be short; it is {len(shown)} characters"
    assert not imports.outputs and imports.execution_count is None, "a later cell ran"


@pytest.mark.slow
def test_in_a_checkout_without_an_install_the_notebook_imports_the_package(tmp_path, bare_kernel):
    course = tmp_path / "course"  # the checkout's layout: the package beside notebooks/
    shutil.copytree(
        REPO / "resnet_lessons",
        course / "resnet_lessons",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (course / "notebooks").mkdir()
    notebook = Path(shutil.copy(NOTEBOOKS[0], course / "notebooks"))
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    # A last cell: where the package came from, here and in a process the kernel starts.
    check = (
        "import subprocess\nimport resnet_lessons\nprint(resnet_lessons.__file__)\n"
        f"code = {BARE_PYTHON!r} + '; import resnet_lessons; print(resnet_lessons.__file__)'\n"
        "print(subprocess.run([sys.executable, '-S', '-c', code], capture_output=True,"
        " text=True, check=True).stdout.strip())"
    )
    first = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    cell = {"cell_type": "code", "id": "where-from", "metadata": {}, "source": check}
    nb["cells"].insert(first + 2, cell)
    notebook.write_text(json.dumps(nb))
    ran, error = _run_first_cells(notebook, 3, course / "notebooks", bare_kernel)
    assert error is None, f"a cell failed in a checkout without an install:\n{error}"
    setup, imports, found = ran.cells
    assert setup.outputs == [], f"the setup cell printed something: {setup.outputs}"
    assert imports.outputs == [], f"the notebook's imports printed something: {imports.outputs}"
    paths = "".join(o.get("text", "") for o in found.outputs).split()
    expected = str(course / "resnet_lessons" / "__init__.py")
    assert paths == [expected, expected], f"imported from {paths}, not the checkout's {expected}"
