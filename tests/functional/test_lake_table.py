"""The lake's Glue table, as the local stack creates it from the same
`pipeline.analytics.lake_table_input` Pulumi deploys: botocore checks the TableInput against
Glue's API model before moto stores it, and what comes back is the definition. (moto runs
no Athena query; tests/unit/test_lake_table.py checks the table against the lake's rows
and paths.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ParamValidationError

from pipeline import analytics
from tests.functional.results_stack import ResultsStack, results_stack
from tests.infra.conftest import stack_config_values


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResultsStack]:
    with results_stack(tmp_path_factory.mktemp("lake-table")) as provisioned:
        yield provisioned


def test_the_local_stack_creates_the_lake_table(stack: ResultsStack) -> None:
    from scripts.local_stack import Names

    info, glue = stack.info, stack.client("glue")
    database = Names().lake_database
    assert glue.get_database(Name=database)["Database"]["Name"] == database
    table = glue.get_table(DatabaseName=database, Name=analytics.LAKE_TABLE)["Table"]
    expected = analytics.lake_table_input(info.results_bucket, lines=list(info.lines),
                                          retention_days=0)
    assert table["Parameters"] == expected["Parameters"]
    assert table["PartitionKeys"] == expected["PartitionKeys"]
    assert table["StorageDescriptor"] == expected["StorageDescriptor"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{info.results_bucket}/lake/"
    assert table["Parameters"]["projection.lake_line.values"].split(",") == [*info.lines,
                                                                           "unknown"]


@pytest.mark.parametrize("stack_name", ["dev", "plant-a"])
def test_glue_takes_the_table_of_each_example_stack(stack: ResultsStack, stack_name: str) -> None:
    """The example stacks' lines and retentions, as `pulumi up` would create them."""
    config = stack_config_values(stack_name)
    glue = stack.client("glue")
    database = analytics.lake_database(f"example-{stack_name}")
    glue.create_database(DatabaseInput={"Name": database})
    table_input = analytics.lake_table_input(
        "example-results", lines=[line["id"] for line in config["linesight:lines"]],
        retention_days=config["linesight:resultsRetentionDays"])
    glue.create_table(DatabaseName=database, TableInput=table_input)
    stored = glue.get_table(DatabaseName=database, Name=analytics.LAKE_TABLE)["Table"]
    assert stored["Parameters"] == table_input["Parameters"]


@pytest.mark.parametrize(("change", "why"), [
    # a table property that is not a string (projection values must be text)
    ({"Parameters": {"projection.enabled": True}}, "Parameters"),
    # a column without its name
    ({"PartitionKeys": [{"Type": "string"}]}, "Name"),
])
def test_glue_refuses_a_table_input_of_the_wrong_shape(stack: ResultsStack,
                                                       change: dict[str, Any],
                                                       why: str) -> None:
    """What makes the tests above worth something: the client checks the shape."""
    glue = stack.client("glue")
    table_input = {**analytics.lake_table_input("b", lines=["l"], retention_days=0), **change}
    with pytest.raises(ParamValidationError, match=why):
        glue.create_table(DatabaseName="never_created", TableInput=table_input)

