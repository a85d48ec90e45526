"""The submission notebook, run headlessly from its first cell to its last on generated data: the
CSV it writes has every file once, with probabilities (or labels) in range."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import SMALL_VIDEO, make_crops, train_config
from fakefinder import synthetic
from fakefinder.engine.predict import file_ids, list_inputs

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "submission.ipynb"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    import fakefinder

    root = tmp_path_factory.mktemp("nb-model")
    result = fakefinder.train(train_config(make_crops(root / "crops"), root / "run", epochs=1))
    return Path(result.output_dir) / "model"


def run_notebook(tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    """Execute the notebook in `tmp_path` with its parameters cell replaced (as papermill does)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return notebook


def outputs(notebook) -> str:
    return "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def test_the_notebook_writes_a_valid_submission(model, tmp_path):
    """A label submission (the probability one, the notebook's default, is checked by the next test)."""
    data = synthetic.make_folder_tree(tmp_path / "test_videos", images=2, videos=1, **SMALL_VIDEO)
    notebook = run_notebook(
        tmp_path,
        MODEL=str(model),
        DATA=str(data),
        OUTPUT="submission.csv",
        FORMAT="label",
        FRAMES_PER_VIDEO=4,
        WORKERS=0,
        PROJECT_FOR=4000,
    )
    submission = pd.read_csv(tmp_path / "submission.csv")
    files = list_inputs([data])
    assert sorted(submission.filename) == sorted(file_ids(files)) and len(files) == len(submission)
    assert set(submission.label) <= {"REAL", "FAKE"}
    text = outputs(notebook)
    assert f"valid: {len(files)} rows" in text and "projected for 4000 videos" in text
    # the projection pays the start-up once and goes at the steady pace after the first file
    import re

    startup, pace = map(
        float, re.search(r"start-up ([\d.]+) s \(once\), then ([\d.]+) s per file", text).groups()
    )
    projected = float(re.search(r"projected for 4000 videos: ([\d.]+) h", text).group(1))
    assert projected == pytest.approx((startup + 4000 * pace) / 3600, abs=0.01)


def test_the_steady_pace_leaves_the_start_up_out():
    from fakefinder.engine.predict import _pace

    assert _pace(0.0, [5.0, 6.0, 7.5, 8.0]) == {"first_file_s": 5.0, "steady_s_per_file": 1.0}
    assert _pace(0.0, [3.0]) == {"first_file_s": 3.0, "steady_s_per_file": None}


def test_the_notebook_refuses_a_submission_that_misses_files(model, tmp_path):
    """The check is real: a file the predictor never saw (added after predict ran) is named; the
    probability submission it checks is otherwise whole (its values in range)."""
    data = synthetic.make_folder_tree(tmp_path / "test_videos", images=1, videos=0, **SMALL_VIDEO)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source += f"\nMODEL = {str(model)!r}\nDATA = {str(data)!r}\nWORKERS = 0"
    predict_cell = next(i for i, c in enumerate(notebook.cells) if "fakefinder.predict(config)" in c.source)
    late = json.dumps(str(data / "late.png"))
    notebook.cells[
        predict_cell
    ].source += f"\nimport shutil\nshutil.copy(files[0], {late})\nfiles = list_inputs([Path(DATA)])"
    with pytest.raises(CellExecutionError, match="missing ids: .*late.png") as refused:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    (verdict,) = [
        line
        for line in str(refused.value).splitlines()
        if "the submission is not valid:" in line and "+" not in line
    ]
    assert "missing ids" in verdict and "out of range" not in verdict and "columns are" not in verdict
    assert pd.read_csv(tmp_path / "submission.csv").probability.between(0, 1).all()
