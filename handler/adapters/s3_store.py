"""The only module that talks to boto3: S3 reads and writes for the batch job."""

from __future__ import annotations

import json
from typing import Any

from handler.batch.job import ObjectRef
from handler.errors import ObjectChanged

# boto3 is imported on first use, not at import: the API path never needs it, and importing it
# costs ~0.1 s of every cold start.
# Standard retry mode backs off on throttling (SlowDown, 503) before giving up to Lambda's own
# retries: https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html
RETRIES = {"max_attempts": 5, "mode": "standard"}


def make_client(service: str = "s3") -> Any:
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL_S3 (e.g. a moto server) is honoured by boto3 itself.
    return boto3.client(service, config=Config(retries=RETRIES))


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

    def open(self, ref: ObjectRef) -> tuple[Any, ObjectRef]:
        """A streaming body of exactly the object the event announced.

        With a version id the version is read; otherwise the ETag must still match (IfMatch),
        so a newer upload is never classified under an older event's name.
        """
        kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
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
        pinned = ObjectRef(
            ref.bucket,
            ref.key,
            resp.get("VersionId") or ref.version_id,
            resp.get("ETag", "").strip('"') or ref.etag,
        )
        return resp["Body"], pinned

    def upload_file(self, bucket: str, key: str, path: str, content_type: str) -> None:
        # Multipart above 8 MB; S3 publishes the object only when every part is in.
        self.client.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type})

    def put_json(self, bucket: str, key: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        data: dict[str, Any] = json.loads(resp["Body"].read())
        return data

    def download_file(self, bucket: str, key: str, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(bucket, key, path)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return False
            raise
        return True

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)


def invoke_self(context: Any) -> Any:
    """How a batch invocation hands the rest of an object to a fresh invocation of itself."""
    arn = getattr(context, "invoked_function_arn", None)
    if not arn:
        return None

    def continue_with(event: dict[str, Any]) -> None:
        client = make_client("lambda")
        client.invoke(FunctionName=arn, InvocationType="Event", Payload=json.dumps(event).encode())

    return continue_with
