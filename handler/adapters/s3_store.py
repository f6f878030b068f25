"""The only module that talks to boto3: S3 reads and writes for the batch job."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from handler.batch.refs import ObjectRef
from handler.errors import ObjectChanged

# boto3 is imported on first use, not at import: the API path never needs it, and importing it
# costs ~0.1 s of every cold start.
# Standard retry mode backs off on throttling (SlowDown, 503) before giving up to Lambda's own
# retries: https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html
RETRIES = {"max_attempts": 5, "mode": "standard"}
MIN_PART = 5 << 20  # S3: every part of a multipart upload but the last has at least 5 MiB


def make_client(service: str = "s3") -> Any:
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL_S3 (e.g. a moto server) is honoured by boto3 itself.
    return boto3.client(service, config=Config(retries=RETRIES))


LONG_TEXT_METADATA = "long-text"


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class S3Store:
    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:  # built once, on first use, then reused while warm
            self._client = make_client()
        return self._client

    def _get(self, ref: ObjectRef, **extra: Any) -> tuple[Any, ObjectRef]:
        kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key, **extra}
        if ref.version_id:
            kwargs["VersionId"] = ref.version_id
        if ref.etag:
            kwargs["IfMatch"] = f'"{ref.etag.strip(chr(34))}"'
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412"):
                raise ObjectChanged(
                    f"s3://{ref.bucket}/{ref.key} changed since the event (ETag {ref.etag} no "
                    "longer matches): the newer object's own event will classify it"
                ) from None
            raise  # missing, denied, throttled: let Lambda retry, then the on-failure destination
        size = resp.get("ContentLength")
        if "ContentRange" in resp:  # "bytes a-b/size"
            size = int(str(resp["ContentRange"]).rsplit("/", 1)[1])
        pinned = ObjectRef(
            ref.bucket,
            ref.key,
            resp.get("VersionId") or ref.version_id,
            resp.get("ETag", "").strip('"') or ref.etag,
            size,
            ref.sequencer,
            # User metadata (`x-amz-meta-long-text`, `aws s3 cp --metadata long-text=windows`).
            (resp.get("Metadata") or {}).get(LONG_TEXT_METADATA) or ref.long_text,
        )
        return resp["Body"], pinned

    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]:
        """A streaming body of exactly the object the event announced.

        With a version id the version is read; otherwise the ETag must still match (IfMatch),
        so a newer upload is never classified under an older event's name.
        """
        return self._get(ref)

    def open_range(self, ref: ObjectRef, start: int, end: int) -> Any:
        """Bytes [start, end) of exactly that version/ETag (a shard of a big object)."""
        if end <= start:
            return io.BytesIO(b"")
        return self._get(ref, Range=f"bytes={start}-{end - 1}")[0]

    def upload_file(self, bucket: str, key: str, path: str, content_type: str) -> None:
        # Multipart above 8 MB; S3 publishes the object only when every part is in.
        self.client.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type})

    def put_json(self, bucket: str, key: str, data: Any) -> None:
        body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    def get_json(self, bucket: str, key: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(resp["Body"].read())

    def assemble(
        self,
        bucket: str,
        key: str,
        parts: Iterable[tuple[str, str, int]],
        content_type: str,
        min_part: int = MIN_PART,
    ) -> dict[str, int]:
        """Publish the concatenation of objects (source bucket, key, size), in order, as one
        object, atomically (CompleteMultipartUpload). A source of at least `min_part` bytes is
        copied inside S3 (UploadPartCopy); smaller neighbours are joined here into one part of at
        least `min_part` (S3's floor for every part but the last). Returns how many parts each
        way took (empty sources take none)."""
        parts = list(parts)
        total = sum(size for _, _, size in parts)
        counts = {"copied": 0, "joined": 0, "sources": len(parts)}
        if total < min_part:  # one small object: no multipart upload at all
            body = b"".join(self._read(b, k) for b, k, size in parts if size)
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
            counts["joined"] = sum(1 for _, _, size in parts if size)
            return counts
        upload = self.client.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type
        )["UploadId"]
        done: list[dict[str, Any]] = []
        buffer: list[bytes] = []
        buffered = 0

        def flush() -> None:
            nonlocal buffered
            number = len(done) + 1
            etag = self.client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=b"".join(buffer)
            )["ETag"]
            done.append({"PartNumber": number, "ETag": etag})
            buffer.clear()
            buffered = 0

        try:
            for src_bucket, src_key, size in parts:
                if not buffer and size >= min_part:
                    number = len(done) + 1
                    copied = self.client.upload_part_copy(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload,
                        PartNumber=number,
                        CopySource={"Bucket": src_bucket, "Key": src_key},
                    )
                    done.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
                    counts["copied"] += 1
                    continue
                if size:
                    buffer.append(self._read(src_bucket, src_key))
                    buffered += size
                    counts["joined"] += 1
                if buffered >= min_part:
                    flush()
            if buffer:
                flush()
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            raise
        return counts

    def _read(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under `prefix` (a finished job's work files); returns how many."""
        deleted = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted


def start_execution(state_machine_arn: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Start the state machine once per name: a repeated start (the same S3 event again, or a
    time hand-off after a size hand-off) starts nothing and says which execution has the job.
    Step Functions keeps a name for 90 days, running or closed; a failed execution is redriven
    (`aws stepfunctions redrive-execution`), not started again."""
    client = make_client("stepfunctions")
    execution = state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"
    try:
        status = client.describe_execution(executionArn=execution)["status"]
        return {"status": "already_started", "execution": execution, "execution_status": status}
    except client.exceptions.ExecutionDoesNotExist:
        pass
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    try:
        arn = client.start_execution(stateMachineArn=state_machine_arn, name=name, input=body)
        return {"status": "distributed", "execution": arn["executionArn"]}
    except client.exceptions.ExecutionAlreadyExists:  # started since the look above
        return {"status": "already_started", "execution": execution}
