"""boto3 clients for the Rekognition-compatible API tests, built exactly as AWS's examples build them."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def rekognition(url: str, key_id: str = "anything", secret: str = "anything") -> Any:
    """A boto3 Rekognition client with only the endpoint and the credentials changed (no retries, so
    a test sees each answer once)."""
    return boto3.client(
        "rekognition",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )
