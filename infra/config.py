"""Read the stack config once, into the frozen `pipeline.stackconfig.StackConfig`.

Every `linesight:` key the stack sets is handed to `parse_stack_config` (so a misspelt key
is refused, not ignored), over the defaults declared in Pulumi.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi.runtime.config import CONFIG, get_config_env

from pipeline.stackconfig import (
    KNOWN_KEYS,
    NAMESPACE,
    StackConfig,
    check_namespaces,
    parse_stack_config,
    project_defaults,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT_YAML = PROJECT_DIR / "Pulumi.yaml"


def stack_values() -> dict[str, Any]:
    """Every `linesight:` value the engine passed (as PULUMI_CONFIG or set explicitly, as
    the mocks do), by bare key, plus anything `pulumi.Config` finds for a declared key."""
    everything = {**get_config_env(), **CONFIG.get()}
    check_namespaces(everything)
    values = {key.partition(":")[2]: value for key, value in everything.items()
              if key.startswith(NAMESPACE + ":")}
    config = pulumi.Config(NAMESPACE)
    for key in KNOWN_KEYS:
        value = config.get(key)
        if value is not None:
            values[key] = value
    return values


def read_stack_config() -> StackConfig:
    return parse_stack_config(stack_values(), project_defaults(PROJECT_YAML),
                              stack=pulumi.get_stack(), region=aws.config.region or "")
