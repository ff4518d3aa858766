"""The resume rules the demo and the curve share: a run folder is reused only for the same settings."""
from __future__ import annotations

import pytest
import yaml

from selfmedmae.config import load_config, save_config
from selfmedmae.errors import UserError
from selfmedmae.experiments.stages import check_same_settings, resume_overrides


def test_a_run_folder_is_reused_only_for_the_same_settings(tmp_path):
    run = tmp_path / "run"
    assert resume_overrides(run) == ["run.resume=auto"]  # fresh where the folder holds nothing
    check_same_settings(None, ["train.lr=0.01"], run)  # no folder yet: nothing to compare
    save_config(load_config(None, ["train.lr=0.01", f"run.dir={run}", "run.resume=true"]), run / "config.yaml")
    check_same_settings(None, ["train.lr=0.01", "data.num_workers=7"], run)  # resume / workers change no result
    with pytest.raises(UserError, match=r"other settings \(train.lr\).*nothing was changed"):
        check_same_settings(None, ["train.lr=0.02"], run)
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["data"]["label_fraction"]  # saved before the key existed: its default
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_settings(None, ["train.lr=0.01"], run)
    with pytest.raises(UserError, match="data.label_fraction"):
        check_same_settings(None, ["train.lr=0.01", "data.label_fraction=0.5"], run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    assert resume_overrides(run) == ["run.resume=auto"]  # continues the run the folder holds
