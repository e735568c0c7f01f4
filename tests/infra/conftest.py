"""Run the Pulumi program under mocks and keep what it registered.

`run_program(stack, overrides)` sets the stack's config exactly as the Pulumi engine would
hand it over (structured values as JSON text), installs `FakeAws` mocks and runs
`infra.stack.main` inside `@pulumi.runtime.test`, so every Output resolves (and any error
inside an `.apply` fails the run). The dependency layer is "installed" by a fake pip, so
these tests are fast and offline; tests/infra/test_package.py covers the real build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.conftest import quick_model

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REGION = "eu-west-1"
ACCOUNT = "123456789012"


@dataclass
class Resource:
    type: str
    name: str
    props: dict[str, Any]  # inputs plus the mock's computed outputs (engine casing)


def partition_of(region: str) -> str:
    """The AWS partition a region is in (its ARNs' second field).

    >>> partition_of("cn-north-1"), partition_of("us-gov-west-1"), partition_of("eu-west-1")
    ('aws-cn', 'aws-us-gov', 'aws')
    """
    return ("aws-cn" if region.startswith("cn-") else
            "aws-us-gov" if region.startswith("us-gov-") else "aws")


def _computed(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible outputs for the resources the program creates (ARNs, names, URLs), in
    the region's partition."""
    out = _computed_in_aws(typ, name, inputs, region)
    partition = partition_of(region)
    if partition != "aws":
        out = {key: value.replace("arn:aws:", f"arn:{partition}:")
               if isinstance(value, str) and key not in inputs else value
               for key, value in out.items()}
    return out


def _computed_in_aws(typ: str, name: str, inputs: dict[str, Any], region: str
                     ) -> dict[str, Any]:
    out = dict(inputs)
    physical = inputs.get("name") or f"{name}-1a2b3c"
    service = typ.split(":")[1].split("/")[0]
    out.setdefault("arn", f"arn:aws:{service}:{region}:{ACCOUNT}:{physical}")
    if typ == "aws:s3/bucket:Bucket":
        bucket = inputs.get("bucket") or f"{name}-1a2b3c"
        out.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", id=bucket)
    elif typ == "aws:sqs/queue:Queue":
        url = f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{physical}"
        out.update(name=physical, arn=f"arn:aws:sqs:{region}:{ACCOUNT}:{physical}", url=url,
                   id=url)
    elif typ == "aws:dynamodb/table:Table":
        arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{physical}"
        out.update(name=physical, arn=arn, id=physical)
        if inputs.get("streamEnabled"):
            out["streamArn"] = f"{arn}/stream/2026-11-23T00:00:00.000"
    elif typ == "aws:sns/topic:Topic":
        out.update(name=physical, arn=f"arn:aws:sns:{region}:{ACCOUNT}:{physical}")
        out["id"] = out["arn"]
    elif typ == "aws:kms/key:Key":
        out.update(keyId="0000-key", arn=f"arn:aws:kms:{region}:{ACCOUNT}:key/0000-key")
    elif typ == "aws:sfn/stateMachine:StateMachine":
        out.update(name=physical,
                   arn=f"arn:aws:states:{region}:{ACCOUNT}:stateMachine:{physical}")
    elif typ == "aws:lambda/function:Function":
        arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{physical}"
        out.update(name=physical, arn=arn, invokeArn=f"arn:aws:apigateway:{region}:lambda:"
                   f"path/2015-03-31/functions/{arn}/invocations")
    elif typ == "aws:lambda/layerVersion:LayerVersion":
        out.update(arn=f"arn:aws:lambda:{region}:{ACCOUNT}:layer:{inputs['layerName']}:1")
    elif typ == "aws:cloudwatch/logGroup:LogGroup":
        out.update(name=physical, arn=f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{physical}")
    elif typ == "aws:iam/role:Role":
        out.update(name=physical, arn=f"arn:aws:iam::{ACCOUNT}:role/{physical}", id=physical)
    elif typ == "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream":
        out.update(name=physical,
                   arn=f"arn:aws:firehose:{region}:{ACCOUNT}:deliverystream/{physical}")
    elif typ == "aws:glue/catalogDatabase:CatalogDatabase":
        out["arn"] = f"arn:aws:glue:{region}:{ACCOUNT}:database/{inputs['name']}"
    elif typ == "aws:glue/catalogTable:CatalogTable":
        out["arn"] = (f"arn:aws:glue:{region}:{ACCOUNT}:table/{inputs['databaseName']}/"
                      f"{inputs['name']}")
    elif typ == "aws:athena/workgroup:Workgroup":
        out.update(arn=f"arn:aws:athena:{region}:{ACCOUNT}:workgroup/{inputs['name']}",
                   id=inputs["name"])
    elif typ == "aws:apigateway/restApi:RestApi":
        out.update(id="api0id", rootResourceId="root0",
                   executionArn=f"arn:aws:execute-api:{region}:{ACCOUNT}:api0id")
    elif typ == "aws:apigateway/stage:Stage":
        out["invokeUrl"] = (f"https://{inputs['restApi']}.execute-api.{region}.amazonaws.com/"
                            f"{inputs['stageName']}")
    return out


class FakeAws(pulumi.runtime.Mocks):
    """An AWS account in `region` that accepts every resource and answers the invokes."""

    def __init__(self, region: str = DEFAULT_REGION) -> None:
        self.region = region
        self.resources: list[Resource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        props = _computed(args.typ, args.name, dict(args.inputs), self.region)
        self.resources.append(Resource(args.typ, args.name, props))
        return props.get("id", f"{args.name}-id"), props

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:index/getRegion:getRegion":
            return {"region": self.region, "name": self.region, "id": self.region}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT,
                    "arn": f"arn:{partition_of(self.region)}:iam::{ACCOUNT}:user/ci",
                    "userId": "AIDA", "id": ACCOUNT}
        if args.token == "aws:index/getPartition:getPartition":
            partition = partition_of(self.region)
            china = partition == "aws-cn"
            return {"partition": partition, "id": partition,
                    "dnsSuffix": "amazonaws.com.cn" if china else "amazonaws.com",
                    "reverseDnsPrefix": "cn.com.amazonaws" if china else "com.amazonaws"}
        raise AssertionError(f"unexpected invoke {args.token}")


@dataclass
class Deployed:
    stack: str
    config: Any  # pipeline.stackconfig.StackConfig
    resources: list[Resource]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, suffix: str) -> list[Resource]:
        return [r for r in self.resources if r.type.endswith(suffix)]

    def one(self, suffix: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(suffix) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {suffix} {name or ''}, got {len(found)}"
        return found[0]


def stack_config_values(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return dict(document["config"])


def engine_config(values: dict[str, Any]) -> dict[str, str]:
    """Config as the engine passes it: strings, structured values as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()}


def fake_pip(requirements: Path, target: Path) -> None:
    (target / "fakedep").mkdir()
    (target / "fakedep" / "__init__.py").write_text("VERSION = '1'\n")


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole model, as `pulumi up` checks it (`infra.package.model_files`)."""
    return quick_model(tmp_path_factory.mktemp("model"))



def run_program(stack: str, build_dir: Path, overrides: dict[str, Any] | None = None
                ) -> Deployed:
    """Run the whole program for `stack` under mocks and return what it registered."""
    from infra import stack as program
    from infra.config import read_stack_config

    values = {**stack_config_values(stack), **(overrides or {})}
    pulumi.runtime.set_all_config(engine_config(values))
    mocks = FakeAws(str(values.get("aws:region") or DEFAULT_REGION))
    pulumi.runtime.set_mocks(mocks, project="linesight", stack=stack, preview=False)
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def program_run() -> pulumi.Output:
        outputs = program.main(build_dir=build_dir, installer=fake_pip)
        return pulumi.Output.all(**outputs).apply(captured.update)

    program_run()
    return Deployed(stack, read_stack_config(), mocks.resources, captured)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, fake_model: Path
             ) -> dict[str, Deployed]:
    """Both example stacks, each run once per session (dev gets a fake model dir)."""
    build = tmp_path_factory.mktemp("build")
    return {
        "dev": run_program("dev", build, {"linesight:modelPath": str(fake_model)}),
        "plant-a": run_program("plant-a", build),
    }
