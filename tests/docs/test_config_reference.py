from __future__ import annotations

from pathlib import Path

from strangler.config import StranglerConfig
from strangler.config_reference import _MEANINGS, DEFAULT_OUTPUT, main, render_reference


def test_the_committed_reference_is_what_the_models_give() -> None:
    assert DEFAULT_OUTPUT.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale: run python -m strangler.config_reference")


def test_the_reference_names_every_key_with_its_default() -> None:
    text = render_reference()
    for key in StranglerConfig.model_fields:
        assert f"| `{key}` |" in text
    assert "| `capabilities.NAME.gate.min_samples` | integer | `200` |" in text
    assert "| `upstreams.NAME.url` | string | *(required)* |" in text
    assert "| `cdc.connectors.NAME.source.kind` | `\"postgres\"` \\| `\"sqlite\"` | *(required)* |" in text
    assert "`cdc.domain_events.rules[].table`" in text


def test_every_supplied_meaning_belongs_to_a_key_that_exists() -> None:
    text = render_reference()
    assert [path for path in _MEANINGS if f"| `{path}` |" not in text] == []


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert main(["--check", "-o", str(stale)]) == 1
    assert main(["-o", str(stale)]) == 0
    assert main(["--check", "-o", str(stale)]) == 0
