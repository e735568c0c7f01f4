"""Reading the stack config in the program: a bad config stops it before any resource
exists, with a message that names the key (the full table of mistakes is in
tests/unit/test_stackconfig.py), and the config is read the way a real engine passes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.stackconfig import ConfigError
from tests.infra.conftest import run_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LINE = {"id": "line-1", "cameras": ["cam-1", "cam-2"]}


@pytest.mark.parametrize(("overrides", "key"), [
    # not an email address
    ({"linesight:alertEmails": ["ops at example.com"]}, "linesight:alertEmails"),
    # a threshold outside [0, 1]
    ({"linesight:confidenceThreshold": "1.5"}, "linesight:confidenceThreshold"),
    # a per-line override outside [0, 1]
    ({"linesight:lines": [{**LINE, "threshold": -0.1}]}, "linesight:lines[line-1].threshold"),
    # a misspelt per-line override is refused, not ignored
    ({"linesight:lines": [{**LINE, "treshold": 0.4}]}, "linesight:lines[0].treshold"),
    # one camera on two lines
    ({"linesight:lines": [LINE, {"id": "line-2", "cameras": ["cam-2"]}]},
     "linesight:lines[line-2].cameras"),
    # a misspelt key
    ({"linesight:workflowTyp": "STANDARD"}, "linesight:workflowTyp"),
    # a misspelt namespace: ignored, the default would stand in for it
    ({"linesigth:workflowType": "STANDARD"}, "linesigth:workflowType"),
    # neither EXPRESS nor STANDARD
    ({"linesight:workflowType": "FAST"}, "linesight:workflowType"),
    # two detectors at once
    ({"linesight:sagemakerEndpoint": "defects-v2"}, "linesight:modelPath"),
    # a model path without a model
    ({"linesight:modelPath": "docs"}, "linesight:modelPath"),
    # Firehose dynamic partitioning needs 64 MB or more
    ({"linesight:firehoseBufferMb": "32"}, "linesight:firehoseBufferMb"),
])
def test_bad_config_fails_with_the_key(tmp_path: Path, fake_model: Path,
                                       overrides: dict[str, Any], key: str) -> None:
    values = {"linesight:modelPath": str(fake_model), **overrides}
    with pytest.raises(ConfigError) as error:
        run_program("dev", tmp_path, values)
    assert str(error.value).startswith(key + ":")


def test_config_passed_by_the_engine_environment_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `pulumi up` hands the config over as PULUMI_CONFIG, not set_all_config."""
    import json

    import pulumi

    from infra.config import read_stack_config
    from tests.infra.conftest import engine_config, stack_config_values

    pulumi.runtime.set_all_config({})
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(engine_config(
        stack_config_values("plant-a"))))
    config = read_stack_config()
    assert [line.id for line in config.lines] == ["press-1", "weld-2", "paint-3"]
    assert config.resource_prefix == "ls-plant-a"


def test_pulumi_up_shows_a_bad_config_as_a_message_not_a_traceback(fake_model: Path) -> None:
    """The program file raises pulumi.RunError, which Pulumi prints without a traceback."""
    import runpy

    import pulumi

    from tests.infra.conftest import REPO, FakeAws, engine_config, stack_config_values

    values = {**stack_config_values("dev"), "linesight:modelPath": str(fake_model),
              "linesight:workflowType": "FAST"}
    pulumi.runtime.set_all_config(engine_config(values))
    pulumi.runtime.set_mocks(FakeAws("us-east-1"), project="linesight", stack="dev",
                             preview=False)
    with pytest.raises(pulumi.RunError) as error:
        runpy.run_path(str(REPO / "__main__.py"))
    assert str(error.value) == "linesight:workflowType: must be EXPRESS or STANDARD, got 'FAST'"
