"""The Colab probing notebook runs top to bottom on a checkpoint written by pretraining."""

import pathlib

import nbclient
import nbformat

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "probe_crema.ipynb"


def test_notebook_probes_a_pretrained_checkpoint(pretrained, tmp_path):
  config, workdir = pretrained
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  params[0].source += (f"\nCHECKPOINT = {str(workdir)!r}\nOUTPUT = {str(tmp_path)!r}"
                       "\nLABEL_FRACTIONS = (1.0,)\nBOOTSTRAP = 10")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()
  outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                    for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.outputs)
  assert "| crema_step2 | 100% |" in outputs and "| random_init | 100% |" in outputs
  images = sum("image/png" in o.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for o in cell.outputs)
  assert images == 3  # ROC curves, reconstruction, embeddings.
  assert (tmp_path / "results.json").is_file()
