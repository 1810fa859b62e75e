"""AWS Rekognition's own service model (shipped in the botocore wheel), loaded once at start-up.

Operation names, member names, types, limits, patterns and enums come from
``botocore/data/rekognition/2016-06-27/service-2.json.gz``; nothing here re-types them. Requests are
validated against the operation's input shape before any handler runs, so a handler only ever sees
a body AWS itself would accept (blobs already base64-decoded).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from botocore.loaders import Loader

from service.api.rekognition.errors import AwsError, ImageTooLarge, InvalidParameter

SERVICE = "rekognition"
API_VERSION = "2016-06-27"


@dataclass(frozen=True, slots=True)
class RekognitionModel:
    """The parts of the service model the facade reads."""

    operations: dict[str, Any]
    shapes: dict[str, Any]
    target_prefix: str
    signing_name: str

    def input_shape(self, operation: str) -> str | None:
        spec = self.operations[operation].get("input")
        return str(spec["shape"]) if spec else None

    def shape(self, name: str) -> dict[str, Any]:
        return dict(self.shapes[name])

    def validate(self, operation: str, body: Any) -> dict[str, Any]:
        """``body`` checked against the operation's input shape; blobs come back as bytes.

        InvalidParameterException names the first member that AWS would refuse (missing, wrong
        type, out of range, not matching the pattern or enum); an oversized image blob is
        ImageTooLargeException, as on AWS. Members the model does not know are ignored (a newer SDK
        may send them).
        """
        shape = self.input_shape(operation)
        if shape is None:
            return {}
        if not isinstance(body, dict):
            raise InvalidParameter("The request body must be a JSON object.")
        checked = _Checker(self.shapes).value(body, shape, "")
        assert isinstance(checked, dict)
        return checked


@cache
def load_model() -> RekognitionModel:
    """The Rekognition model of the installed botocore (cached: read once per process)."""
    model = Loader().load_service_model(SERVICE, "service-2", API_VERSION)
    metadata = model["metadata"]
    return RekognitionModel(
        operations=dict(model["operations"]),
        shapes=dict(model["shapes"]),
        target_prefix=str(metadata["targetPrefix"]),
        signing_name=str(metadata.get("signingName", metadata["endpointPrefix"])),
    )


class _Checker:
    def __init__(self, shapes: dict[str, Any]) -> None:
        self.shapes = shapes

    def value(self, value: Any, shape_name: str, where: str) -> Any:
        shape = self.shapes[shape_name]
        kind = shape["type"]
        check = getattr(self, f"_{kind}", None)
        if check is None:  # a type no supported operation takes (timestamps, maps ...): passed through
            return value
        return check(value, shape, shape_name, where)

    def _structure(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidParameter(f"{where or 'The request'} must be an object.")
        out: dict[str, Any] = {}
        for member in shape.get("required", []):
            if value.get(member) is None:
                raise InvalidParameter(f"Missing required parameter {_join(where, member)}.")
        for member, spec in shape.get("members", {}).items():
            if member in value and value[member] is not None:
                out[member] = self.value(value[member], spec["shape"], _join(where, member))
        return out

    def _list(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidParameter(f"{where} must be a list.")
        _length(len(value), shape, where, "items")
        return [self.value(item, shape["member"]["shape"], f"{where}[{i}]") for i, item in enumerate(value)]

    def _string(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> str:
        if not isinstance(value, str):
            raise InvalidParameter(f"{where} must be a string.")
        _length(len(value), shape, where, "characters")
        enum = shape.get("enum")
        if enum is not None and value not in enum:
            raise InvalidParameter(f"{where} must be one of {', '.join(enum)}.")
        pattern = shape.get("pattern")
        compiled = _compiled(pattern) if pattern is not None else None
        if compiled is not None and compiled.fullmatch(value) is None:
            raise InvalidParameter(f"{where} does not match the pattern {pattern}.")
        return value

    def _integer(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameter(f"{where} must be an integer.")
        _range(value, shape, where)
        return value

    _long = _integer

    def _float(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidParameter(f"{where} must be a finite number.")
        _range(value, shape, where)
        return float(value)

    _double = _float

    def _boolean(self, value: Any, _shape: dict[str, Any], _name: str, where: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidParameter(f"{where} must be true or false.")
        return value

    def _blob(self, value: Any, shape: dict[str, Any], _name: str, where: str) -> bytes:
        if not isinstance(value, str):
            raise InvalidParameter(f"{where} must be a base64 string.")
        limit = shape.get("max")
        if limit is not None and len(value) > 4 * math.ceil(int(limit) / 3) + 4:
            raise ImageTooLarge(f"{where} is larger than {limit} bytes.")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidParameter(f"{where} is not valid base64.") from exc
        if limit is not None and len(data) > int(limit):
            raise ImageTooLarge(f"{where} is larger than {limit} bytes.")
        if len(data) < int(shape.get("min", 0)):
            raise InvalidParameter(f"{where} must not be empty.")
        return data


@cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """The model's (Java) pattern in Python; None for the few Python cannot read (``\\p{L}`` in tag
    shapes, which no served operation takes)."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _join(where: str, member: str) -> str:
    return f"{where}.{member}" if where else member


def _length(length: int, shape: dict[str, Any], where: str, unit: str) -> None:
    if "min" in shape and length < int(shape["min"]):
        raise InvalidParameter(f"{where} must have at least {shape['min']} {unit}.")
    if "max" in shape and length > int(shape["max"]):
        raise InvalidParameter(f"{where} must have at most {shape['max']} {unit}.")


def _range(value: float, shape: dict[str, Any], where: str) -> None:
    if "min" in shape and value < shape["min"]:
        raise InvalidParameter(f"{where} must be at least {shape['min']}.")
    if "max" in shape and value > shape["max"]:
        raise InvalidParameter(f"{where} must be at most {shape['max']}.")


__all__ = ["API_VERSION", "SERVICE", "AwsError", "RekognitionModel", "load_model"]
