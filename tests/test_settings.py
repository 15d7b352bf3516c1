"""The one typed-settings mechanism: recipe sections checked like component keywords."""

from __future__ import annotations

import sys
import subprocess
from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from cogframe.config.settings import parse_section, read_section
from cogframe.errors import ConfigError, Problem


@dataclass(frozen=True)
class Demo:
    steps: int
    rate: float = 0.5
    sizes: list[int] = field(default_factory=lambda: [1])
    pair: tuple[float, float] = (0.0, 1.0)
    label: str | None = None

    def problems(self) -> list[Problem]:
        return [Problem("rate", f"must be positive, got {self.rate}", "e.g. 0.5")] if self.rate <= 0 else []


def test_defaults_apply_and_types_are_the_component_checkers():
    assert read_section(Demo, {"steps": 3}, where="demo") == Demo(steps=3)
    with pytest.raises(ConfigError) as err:
        read_section(Demo, {"steps": "x", "sizes": [1, "two"], "pair": [1.0], "labl": "a"}, where="demo")
    msg = str(err.value)
    assert msg.startswith("the 'demo' settings are invalid (4 problems):")
    assert "demo.steps: section 'demo' expects int for 'steps', got str 'x'" in msg
    assert "demo.sizes: section 'demo' expects list [int, ...] for 'sizes'" in msg
    assert "demo.pair: section 'demo' expects list [float, float] for 'pair', got list [1.0]" in msg
    assert "demo.labl: section 'demo' takes no keyword 'labl': did you mean 'label'?" in msg


def test_value_checks_run_alongside_type_problems_of_other_keys():
    settings, problems = parse_section(Demo, {"steps": 2, "rate": -1, "label": 3}, where="demo")
    assert settings is None
    assert [p.where for p in problems] == ["demo.label", "demo.rate"]
    # A required key that is wrong leaves nothing to check the values on: only the type problem.
    _, problems = parse_section(Demo, {"steps": "x", "rate": -1}, where="demo")
    assert [p.where for p in problems] == ["demo.steps"]


def test_missing_marker_and_non_mapping_sections():
    node = OmegaConf.create({"demo": {"steps": "???"}}).demo
    _, problems = parse_section(Demo, node, where="demo")
    assert [str(p) for p in problems] == ["demo.steps: is ??? (left for you to set): set it, e.g. demo.steps=<value>"]
    _, problems = parse_section(Demo, [1, 2], where="demo")
    assert "'demo' must be a mapping of settings" in str(problems[0])


def test_train_settings_import_no_torch():
    code = ("import sys; import cogframe.core.training.settings, cogframe.config.settings; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
