"""Storage: the hardened buckets (images, results, model), the results and tokens tables,
and the uploaded model.

Every bucket gets the same hardening (`HardenedBucket`): SSE, ACLs off, all public access
blocked, a policy that refuses plain HTTP, and a lifecycle. The results table comes from
`pipeline.tables`, the same definition the local stack and the query code use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import package
from pipeline import tables
from pipeline.analytics import ATHENA_RESULTS_PREFIX, LAKE_ERROR_PREFIX, LAKE_PREFIX
from pipeline.ingest import HEATMAP_PREFIX

MODEL_PREFIX = "models/"
ABORT_INCOMPLETE_UPLOAD_DAYS = 1


@dataclass(frozen=True)
class HardenedBucketArgs:
    purpose: str
    expire_after_days: int = 0  # 0 keeps objects forever
    expire_prefixes: tuple[str, ...] = ("",)  # "" is the whole bucket
    upload_origins: tuple[str, ...] = ()  # browser origins that may upload (CORS)
    # Keep what a key held before it was written again (an upload form used twice), for
    # as long as the objects themselves are kept (`lifecycle_rules`).
    versioned: bool = False


class HardenedBucket(pulumi.ComponentResource):
    """An S3 bucket with SSE, ACLs disabled, public access blocked and TLS-only access."""

    def __init__(self, name: str, args: HardenedBucketArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:storage:HardenedBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(name, tags={"linesight:purpose": args.purpose}, opts=child)
        aws.s3.BucketOwnershipControls(
            name, bucket=self.bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        public_access = aws.s3.BucketPublicAccessBlock(
            name, bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            name, bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child)
        aws.s3.BucketPolicy(
            name, bucket=self.bucket.id,
            policy=pulumi.Output.json_dumps(tls_only_policy(self.bucket.arn)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]))
        lifecycle_opts = child
        if args.versioned:
            versioning = aws.s3.BucketVersioning(
                name, bucket=self.bucket.id,
                versioning_configuration={"status": "Enabled"}, opts=child)
            # S3 refuses noncurrent-version rules on a bucket not yet versioned
            lifecycle_opts = pulumi.ResourceOptions(parent=self, depends_on=[versioning])
        aws.s3.BucketLifecycleConfiguration(
            name, bucket=self.bucket.id,
            rules=lifecycle_rules(args.expire_after_days, args.expire_prefixes,
                                  versioned=args.versioned), opts=lifecycle_opts)
        if args.upload_origins:
            aws.s3.BucketCorsConfiguration(
                name, bucket=self.bucket.id,
                cors_rules=[upload_cors_rule(args.upload_origins)], opts=child)
        self.register_outputs({"bucket": self.bucket.bucket, "arn": self.bucket.arn})


def tls_only_policy(bucket_arn: Any) -> dict[str, Any]:
    """Deny every request that does not use TLS (the bucket and its objects)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    }


def lifecycle_rules(expire_after_days: int, prefixes: tuple[str, ...], *,
                    versioned: bool = False) -> list[dict[str, Any]]:
    """Abort stale multipart uploads; expire objects after `expire_after_days` (0: never).
    In a versioned bucket an expired object becomes an older version, and older versions
    (an image replaced through a reused upload form, too) are removed `expire_after_days`
    after they became older, then their leftover delete markers."""
    rules: list[dict[str, Any]] = [{
        "id": "abort-incomplete-uploads",
        "status": "Enabled",
        "filter": {},
        "abort_incomplete_multipart_upload": {
            "days_after_initiation": ABORT_INCOMPLETE_UPLOAD_DAYS},
    }]
    if expire_after_days > 0:
        for prefix in prefixes:
            rules.append({
                "id": f"expire-{prefix.strip('/') or 'all'}",
                "status": "Enabled",
                "filter": {"prefix": prefix} if prefix else {},
                "expiration": {"days": expire_after_days},
                **({"noncurrent_version_expiration": {"noncurrent_days": expire_after_days}}
                   if versioned else {}),
            })
        if versioned:
            rules.append({"id": "remove-expired-delete-markers", "status": "Enabled",
                          "filter": {}, "expiration": {"expired_object_delete_marker": True}})
    return rules


def upload_cors_rule(origins: tuple[str, ...]) -> dict[str, Any]:
    """Only what a browser upload needs: the presigned POST (POST /uploads) and PUT
    (GET /getsignedurl) with the headers `pipeline.uploads.put_headers` makes it send
    (content type, x-amz-meta-*, and If-None-Match, which keeps the URL to one write)."""
    return {
        "allowed_methods": ["POST", "PUT"],
        "allowed_origins": list(origins),
        "allowed_headers": ["content-type", "if-none-match", "x-amz-meta-*"],
        "expose_headers": ["ETag"],
        "max_age_seconds": 3000,
    }


def table_args(create_table: dict[str, Any]) -> dict[str, Any]:
    """`aws.dynamodb.Table` arguments from DynamoDB CreateTable arguments (as given by
    `pipeline.tables.create_table_args`), so both stacks build the same table."""
    (hash_key,) = [k["AttributeName"] for k in create_table["KeySchema"]
                   if k["KeyType"] == "HASH"]
    stream = create_table.get("StreamSpecification") or {}
    return {
        "billing_mode": create_table["BillingMode"],
        "hash_key": hash_key,
        "attributes": [{"name": a["AttributeName"], "type": a["AttributeType"]}
                       for a in create_table["AttributeDefinitions"]],
        "global_secondary_indexes": [{
            "name": index["IndexName"],
            "key_schemas": [{"attribute_name": k["AttributeName"], "key_type": k["KeyType"]}
                            for k in index["KeySchema"]],
            "projection_type": index["Projection"]["ProjectionType"],
        } for index in create_table.get("GlobalSecondaryIndexes", [])],
        "stream_enabled": bool(stream.get("StreamEnabled")),
        "stream_view_type": stream.get("StreamViewType"),
    }


@dataclass(frozen=True)
class StorageArgs:
    prefix: str
    image_retention_days: int
    results_retention_days: int
    upload_origins: tuple[str, ...] = ()
    model_dir: Path | None = None  # a local model directory to upload


class Storage(pulumi.ComponentResource):
    """Buckets, tables and the uploaded model of one environment."""

    def __init__(self, name: str, args: StorageArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:storage:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.images = HardenedBucket(f"{p}-images", HardenedBucketArgs(
            purpose="uploaded camera images",
            expire_after_days=args.image_retention_days,
            upload_origins=args.upload_origins, versioned=True), opts=child)
        self.results = HardenedBucket(f"{p}-results", HardenedBucketArgs(
            purpose="results lake, heatmaps, Athena query results and the QuickSight manifest",
            expire_after_days=args.results_retention_days,
            # query results are copies of lake rows: kept no longer than the rows
            expire_prefixes=(LAKE_PREFIX, LAKE_ERROR_PREFIX, HEATMAP_PREFIX,
                             ATHENA_RESULTS_PREFIX)), opts=child)

        self.table = aws.dynamodb.Table(
            f"{p}-results",
            **table_args(tables.create_table_args(f"{p}-results")),
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True},
            opts=child)
        self.tokens_table = aws.dynamodb.Table(
            f"{p}-tokens",
            billing_mode="PAY_PER_REQUEST",
            hash_key="token_id",
            attributes=[{"name": "token_id", "type": "S"}],
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True},
            opts=child)

        # The uploaded model lives under a content-hash prefix: a new model is a new URI,
        # which changes the functions' environment and so replaces warm containers.
        self.model_bucket: HardenedBucket | None = None
        self.model_uri: pulumi.Output[str] | None = None
        self.model_key_prefix = ""
        if args.model_dir is not None:
            files = package.model_files(args.model_dir)
            self.model_key_prefix = f"{MODEL_PREFIX}{package.model_digest(files)}/"
            self.model_bucket = HardenedBucket(f"{p}-models", HardenedBucketArgs(
                purpose="detector model artifacts"), opts=child)
            objects = [
                aws.s3.BucketObjectv2(
                    f"{p}-model-{relative}",
                    bucket=self.model_bucket.bucket.id,
                    key=self.model_key_prefix + relative,
                    source=pulumi.FileAsset(str(path)),
                    opts=pulumi.ResourceOptions(parent=self.model_bucket))
                for relative, path in files]
            # Resolves only once every object is uploaded, so no function sees a URI early.
            self.model_uri = pulumi.Output.all(
                self.model_bucket.bucket.bucket, *[o.key for o in objects],
            ).apply(lambda values: f"s3://{values[0]}/{self.model_key_prefix}")

        self.register_outputs({
            "images_bucket": self.images.bucket.bucket,
            "results_bucket": self.results.bucket.bucket,
            "table": self.table.name,
            "tokens_table": self.tokens_table.name,
        })
