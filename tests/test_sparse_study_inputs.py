"""Bad input to the sparse-field studies: one line and exit status 2, nothing trained."""

from __future__ import annotations

import numpy as np

from ray_jobs.cli import main as cli_main
from tests.test_classical import _two_eof_store

STUDY = "configs/reproduce/fields_ncep_wind10m.yaml"


def test_a_study_naming_a_variable_the_store_lacks_is_one_line(tmp_path, capsys):
    store = _two_eof_store(tmp_path, np.random.default_rng(0).normal(size=(40, 2)))
    argv = [
        "reproduce", "--config", STUDY, "--local", f"data.store={store.location.display}",
        "data.modalities=[a,u10]", f"run.out_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "missing variable(s) ['u10']" in lines[0], err
    assert "Traceback" not in err
    assert not list((tmp_path / "runs").glob("reproduce/*/*/checkpoints"))
