"""The quickstart notebook runs top to bottom (nbclient, a real kernel) in a scratch folder."""
from __future__ import annotations

import nbformat
import pytest
from conftest import REPO

nbclient = pytest.importorskip("nbclient")


EXPECTED = {"quickstart.ipynb": "ML status: out-of-sample",
            "universe.ipynb": "Primary test (pooled scheme, filter mode, pattern level)"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert EXPECTED[name] in text
