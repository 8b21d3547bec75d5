"""A compress output written before stages/settings.json existed (issue 28, finding 2): a re-run with other
settings is refused with one line unless `overwrite` (nothing on disk changes); the same settings
still resume, decided by the stage markers' keys."""

from __future__ import annotations


import pytest

from pathprune.errors import OutputError
from pathprune.pipeline.resume import SETTINGS_FILE, STAGES_DIR

from test_resume_identity import _compress, tiny_inputs


@pytest.mark.slow  # slow tier: three whole compress runs
def test_an_output_without_recorded_settings_resumes_or_refuses(tmp_path):
    weights, data, eval_data, out = tiny_inputs(tmp_path)
    first, _ = _compress(tmp_path, weights, data, eval_data, out)
    assert first["skipped"] == []
    recorded = out / STAGES_DIR / SETTINGS_FILE

    recorded.unlink()  # as an older version left it: stage markers, no settings.json
    again, _ = _compress(tmp_path, weights, data, eval_data, out)
    assert again["skipped"] == ["prune", "export", "bench"]
    assert recorded.exists()  # recorded from now on

    recorded.unlink()
    kept = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(OutputError) as err:
        _compress(tmp_path, weights, data, eval_data, out, ratio=0.6)
    message = str(err.value)
    assert "\n" not in message and "before its settings were recorded" in message and "overwrite" in message
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == kept  # nothing replaced

    replaced, _ = _compress(tmp_path, weights, data, eval_data, out, ratio=0.6, overwrite=True)
    assert replaced["skipped"] == [] and replaced["models"][-1]["ratio"] == pytest.approx(0.6, abs=0.05)


def test_markers_of_other_stages_or_unreadable_markers_are_not_the_same_settings(tmp_path):
    from pathprune.pipeline.resume import same_as_unrecorded as _same_as_unrecorded

    out = tmp_path / "c"
    (out / STAGES_DIR).mkdir(parents=True)
    assert _same_as_unrecorded([], out)  # nothing made yet
    (out / STAGES_DIR / "finetune.json").write_text('{"key": "abc"}')  # a stage this run does not have
    assert not _same_as_unrecorded([], out)
    (out / STAGES_DIR / "finetune.json").write_text("not json")
    assert not _same_as_unrecorded([], out)
