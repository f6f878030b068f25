"""What `sam build` / `sam package` fill in before CloudFormation sees a template, so that the
SAM translator can transform it offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/text-classifier:python3.12-v1"


def packaged(doc: dict[str, Any]) -> dict[str, Any]:
    """The pushed image, and the uploaded zips and state machine definitions, in place."""
    for resource in doc["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
            props["ImageUri"] = IMAGE_URI
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = {"Bucket": "artifacts", "Key": Path(props[key]).name + ".zip"}
    return doc


def transform(doc: dict[str, Any]) -> dict[str, Any]:
    from samtranslator.translator.transform import transform as sam_transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    out: dict[str, Any] = sam_transform(packaged(doc), {}, NoManagedPolicies())
    return out
