"""Every notebook in notebooks/ runs top to bottom without error."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks, as a user running them in order would have: notebook 01's
    small extraction run (runs/notebook_evil) is reused by the later notebooks, not redone."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, workdir):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    text = "".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "IProgress not found" not in text  # ipywidgets is installed: bars are widgets
    if path.name.startswith("02_"):  # the steering sweep's cell shows a widget progress bar
        sweep = next(c for c in nb.cells if "pl.steering_sweep(" in c.source)
        kinds = {k for o in sweep.get("outputs", []) for k in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in kinds, kinds


def test_notebooks_are_numbered_in_reading_order():
    assert NOTEBOOKS, "no notebooks found"
    assert all(p.name[:2].isdigit() and p.name[2] == "_" for p in NOTEBOOKS)
