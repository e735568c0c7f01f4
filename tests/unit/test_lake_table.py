"""The Glue table over the lake reads what Firehose writes: a column for every key of a lake
row, with a type that holds its values; partition keys that no column shadows; and a
projected location that is, for any line and day, the prefix Firehose delivers to."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pipeline import analytics
from pipeline.records import ResultRecord
from tests.conftest import REPO
from tests.unit.test_lake_rows import ANOMALOUS, CAPTURED, INVALID, REVIEWED

# The Hive type that holds each JSON value a lake row can have (bool before int: a bool is
# an int to Python).
HIVE_TYPES = [(bool, "boolean"), (int, "int"), (float, "double"), (str, "string")]
# Only the defaults: a row whose optional fields were never set.
BARE = ResultRecord("c" * 32, "line-3", "cam-9", "s3://images/k.jpg", CAPTURED, CAPTURED, "OK")

LINES = ["press-1", "weld-2", "paint-3"]


def table(lines: list[str] | None = None, retention_days: int = 365) -> dict[str, Any]:
    return analytics.lake_table_input("results-bucket", lines=LINES if lines is None else lines,
                                      retention_days=retention_days)


def hive_type(value: Any) -> str:
    return next(kind for python, kind in HIVE_TYPES if isinstance(value, python))


@pytest.mark.parametrize("record", [ANOMALOUS, REVIEWED, INVALID, BARE],
                         ids=["anomalous", "reviewed", "invalid", "defaults"])
def test_the_columns_are_the_keys_of_a_lake_row_with_their_types(record: ResultRecord) -> None:
    """A key added to `lake_row` without its column would never be queryable; a column
    without its key would be null in every row."""
    row = analytics.lake_row(record, "eu-west-1")
    columns = {c["Name"]: c["Type"] for c in table()["StorageDescriptor"]["Columns"]}
    assert list(columns) == [key.lower() for key in row]
    assert {name.lower(): hive_type(value) for name, value in row.items()} == columns


def test_partition_keys_are_no_columns_in_any_case() -> None:
    """Hive folds names to lower case: a partition key `year` would be the rows' `Year`
    (their capture year, not the path's delivery year), and Glue refuses the table."""
    definition = table()
    keys = [k["Name"] for k in definition["PartitionKeys"]]
    columns = {c["Name"].lower() for c in definition["StorageDescriptor"]["Columns"]}
    assert not {key.lower() for key in keys} & columns
    assert len(set(keys)) == len(keys) == len(analytics.LAKE_PARTITION_KEYS)
    # names Athena reads without quoting
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in [*keys, *columns])


# --- the projected location is the Firehose prefix ---------------------------------------

_FIREHOSE_TIMESTAMP = {"yyyy": "%Y", "MM": "%m", "dd": "%d"}  # Java patterns Firehose uses


def firehose_key_prefix(line: str, arrival: datetime) -> str:
    """Where Firehose writes a row of `line` that arrives at `arrival`: the destination's
    prefix, its expressions evaluated as Firehose does."""
    destination = analytics.s3_destination(bucket_arn="arn:aws:s3:::results-bucket",
                                           role_arn="arn:role", buffering=analytics.Buffering())
    prefix = destination["Prefix"].replace("!{partitionKeyFromQuery:line}", line)
    prefix = re.sub(r"!\{timestamp:(\w+)\}",
                    lambda m: arrival.strftime(_FIREHOSE_TIMESTAMP[m[1]]), prefix)
    assert "!{" not in prefix, prefix
    return "s3://results-bucket/" + prefix


def projected_value(parameters: dict[str, str], key: str, value: Any) -> str:
    """A partition's value as Athena's projection of `key` renders it into the template,
    refused (AssertionError) when the projection does not cover it."""
    kind = parameters[f"projection.{key}.type"]
    if kind == "enum":
        assert value in parameters[f"projection.{key}.values"].split(","), (key, value)
        return str(value)
    if kind == "integer":
        low, high = (int(v) for v in parameters[f"projection.{key}.range"].split(","))
        assert low <= value <= high, (key, value)
        return str(value).zfill(int(parameters.get(f"projection.{key}.digits", "0")))
    assert kind == "date", (key, kind)
    assert parameters[f"projection.{key}.range"].endswith(",NOW"), key
    return value.strftime(parameters[f"projection.{key}.format"].replace("yyyy", "%Y"))


@pytest.mark.parametrize(("line", "arrival"), [
    # a month and a day of one digit: both zero-padded in the path
    ("press-1", datetime(2026, 3, 4, 5, 6, tzinfo=UTC)),
    # the last day of a year
    ("paint-3", datetime(2026, 12, 31, 23, 59, tzinfo=UTC)),
    # a line id with dots and underscores, as line ids may have
    ("a.b_c", datetime(2027, 10, 10, tzinfo=UTC)),
], ids=["padded", "year-end", "odd-id"])
def test_the_projected_location_is_where_firehose_writes(line: str, arrival: datetime) -> None:
    definition = table(lines=[*LINES, line])
    parameters = definition["Parameters"]
    values = {"lake_line": line, "lake_year": arrival, "lake_month": arrival.month,
              "lake_day": arrival.day}
    location = parameters["storage.location.template"]
    for key in [k["Name"] for k in definition["PartitionKeys"]]:
        assert location.count("${" + key + "}") == 1, key
        location = location.replace("${" + key + "}", projected_value(parameters, key,
                                                                     values[key]))
    assert location == firehose_key_prefix(line, arrival)
    assert location.startswith(definition["StorageDescriptor"]["Location"])


def test_the_line_projection_is_the_configured_lines() -> None:
    """An unconfigured line's rows stay in S3 outside the table until the line is
    configured; an empty projection would be a table Athena refuses to query. The rows of
    keys the API did not issue (line `unknown`) are in it, for audits."""
    parameters = table()["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.lake_line.values"].split(",") == [*LINES, "unknown"]
    assert table(lines=["unknown", "press-1"])["Parameters"][
        "projection.lake_line.values"] == "unknown,press-1"
    with pytest.raises(AssertionError):
        projected_value(parameters, "lake_line", "unconfigured-line")
    with pytest.raises(ValueError, match="at least one line"):
        table(lines=[])


@pytest.mark.parametrize("retention_days", [1, 30, 334, 335, 364, 365, 366, 730, 1000])
@pytest.mark.parametrize("today", [date(2026, 1, 1), date(2028, 2, 29), date(2026, 12, 31)])
def test_the_year_projection_reaches_every_row_the_lifecycle_keeps(retention_days: int,
                                                                     today: date) -> None:
    """The oldest row still in the lake arrived `retention_days` ago, and S3 may take
    up to EXPIRY_SLACK_DAYS more to expire it; the projection must reach back to its year."""
    first = analytics.lake_year_range(retention_days).split(",")[0]
    years_back = int(re.fullmatch(r"NOW-(\d+)YEARS", first)[1])  # type: ignore[index]
    oldest = today - timedelta(days=retention_days + analytics.EXPIRY_SLACK_DAYS)
    assert today.year - years_back <= oldest.year


def test_a_lake_kept_forever_is_projected_from_the_first_year() -> None:
    assert analytics.lake_year_range(0) == f"{analytics.LAKE_FIRST_YEAR},NOW"


def test_the_serde_reads_the_rows_json_in_any_case() -> None:
    storage = table()["StorageDescriptor"]
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    # the rows' keys are mixed case; Athena asks for them in lower case
    assert storage["SerdeInfo"]["Parameters"]["case.insensitive"] == "TRUE"
    # the table reads what the manifest points QuickSight at
    manifest = analytics.quicksight_manifest("results-bucket")
    assert manifest["fileLocations"][0]["URIPrefixes"] == [storage["Location"]]


_SQL_WORDS = {"select", "as", "substr", "count", "distinct", "case", "when", "then", "else",
              "end", "round", "cast", "double", "from", "where", "group", "by", "order", "desc",
              "and", "not", "with", "sum", "row_number", "over", "partition"}
SAVED = {saved.key: saved for saved in analytics.saved_queries()}


@pytest.mark.parametrize("key", SAVED)
def test_a_saved_query_reads_columns_the_table_has(key: str) -> None:
    sql = SAVED[key].sql
    code = re.sub(r"--[^\n]*|'[^']*'", " ", sql)  # no comments, no string literals
    aliases = set(re.findall(r"\bAS\s+(\w+)|\bWITH\s+(\w+)\s+AS\b", code, flags=re.IGNORECASE))
    names = {word.lower() for word in re.findall(r"[A-Za-z_]\w*", code)}
    read = (names - _SQL_WORDS - {a.lower() for pair in aliases for a in pair if a}
            - {analytics.LAKE_TABLE})
    definition = table()
    columns = {c["Name"].lower() for c in definition["StorageDescriptor"]["Columns"]}
    assert read, sql
    assert read <= columns, read - columns


@pytest.mark.parametrize("key", SAVED)
def test_the_docs_show_each_saved_query_as_it_is(key: str) -> None:
    """docs/deploy.md quotes the saved queries; a change to one shows in the other."""
    body = "".join(line + "\n" for line in SAVED[key].sql.splitlines()
                   if not line.startswith("--"))
    assert f"```sql\n{body}```" in (REPO / "docs" / "deploy.md").read_text()


# --- the saved queries' answers over lake rows --------------------------------------------
# SQLite runs them (Athena's SQL and SQLite's agree on what they use: CTEs, row_number,
# CASE, CAST AS double), over a table of the lake's columns filled with `lake_row`s.

_SQLITE_TYPES = {"boolean": "INTEGER", "int": "INTEGER", "double": "REAL", "string": "TEXT"}


def _lake(records: list[ResultRecord]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    names = [name.lower() for name, _, _ in analytics.LAKE_COLUMNS]
    db.execute(f"CREATE TABLE {analytics.LAKE_TABLE} (" + ", ".join(
        f'"{name.lower()}" {_SQLITE_TYPES[kind]}' for name, kind, _ in analytics.LAKE_COLUMNS)
        + ")")
    for record in records:
        row = {key.lower(): value for key, value in analytics.lake_row(record, "r").items()}
        db.execute(f"INSERT INTO {analytics.LAKE_TABLE} VALUES ({', '.join('?' * len(names))})",
                   [row[name] for name in names])
    return db


def _reviewed(record: ResultRecord, label: str, hour: int) -> ResultRecord:
    return record.with_changes(review={"label": label, "note": "", "reviewer": "qa",
                                       "reviewed_at": f"2026-11-24T{hour:02d}:00:00.000+00:00"})


def _result(image: str, line: str, anomalous: bool, status: str = "OK") -> ResultRecord:
    return BARE.with_changes(image_id=image * 32, line_id=line, is_anomalous=anomalous,
                             status=status)


def _day_of_lake() -> list[ResultRecord]:
    """line-3 on one day: a judged twice over (normal, then anomaly on a second look, as
    the model said) and delivered twice; b a false alarm; c a miss; d never reviewed.
    line-4: e unusable, yet reviewed."""
    a, b = _result("a", "line-3", True), _result("b", "line-3", True)
    c, d = _result("c", "line-3", False), _result("d", "line-3", False)
    e = _result("e", "line-4", False, status="INVALID")
    return [a, a, _reviewed(a, "normal", 9), _reviewed(a, "anomaly", 11), b,
            _reviewed(b, "normal", 10), c, _reviewed(c, "anomaly", 10), d, e,
            _reviewed(e, "anomaly", 10)]


def test_the_review_query_counts_each_image_by_its_latest_review() -> None:
    db = _lake(_day_of_lake())
    rows = db.execute(analytics.review_query()).fetchall()
    # line, day, reviewed, false alarms, misses, agreement (a only: 1 of 3)
    assert rows == [("line-3", "2026-11-23", 3, 1, 1, 0.3333)]


def test_the_anomaly_rate_query_counts_images_not_rows() -> None:
    """A row delivered twice, or once more per review, is still one image."""
    db = _lake(_day_of_lake())
    rows = db.execute(analytics.anomaly_rate_query()).fetchall()
    assert rows == [("line-3", "2026-11-23", 4, 2, 0.5)]
