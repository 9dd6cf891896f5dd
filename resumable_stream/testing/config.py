"""S2's JSON shapes of basin and stream configuration, and the parsing helpers every JSON body uses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..memory_stream import TIMESTAMPING_MODES
from .errors import api_error

__all__ = [
    "BasinConfig",
    "basin_config",
    "basin_reconfigured",
    "merge_stream_config",
    "parse_json",
    "resolved_stream_config",
    "stream_config",
    "stream_reconfiguration",
]

_U64_MAX = 2**64 - 1
_DEFAULT_RETENTION_AGE = 7 * 24 * 3600
_STORAGE_CLASSES = ("standard", "express")
_CIPHERS = ("aegis-256", "aes-256-gcm")
_NESTED_CONFIG = ("timestamping", "delete_on_empty")


def bad_json(message: str) -> Exception:
    return api_error("bad_json", message)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid JSON number {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate field `{duplicate}`")
    return out


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_object)


#: The most bytes of JSON a request may carry: s2-lite's web framework (axum) buffers at most 2 MiB.
MAX_JSON_BODY = 2 * 1024 * 1024


def parse_json(body: bytes) -> Any:
    """A request body as JSON, refusing duplicate fields and ``NaN``/``Infinity``; 400 ``bad_json`` if malformed.

    A body over :data:`MAX_JSON_BODY` is refused as s2-lite refuses it.
    """
    if len(body) > MAX_JSON_BODY:
        raise bad_json("Failed to buffer the request body: length limit exceeded")
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise bad_json(f"Failed to parse the request body as JSON: {exc}") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must be an object")
    return value


def u64(value: Any, what: str, *, maximum: int = _U64_MAX) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must be an unsigned integer")
    return value


def opt_u64(value: Any, what: str) -> int | None:
    return None if value is None else u64(value, what)


def json_string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must be a string")
    return value


def opt_bool(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must be a boolean")
    return value


def _enum(value: Any, what: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must be one of {', '.join(choices)}")
    return str(value)


def _retention(value: Any, what: str) -> dict[str, Any]:
    policy = json_object(value, what)
    if len(policy) != 1 or next(iter(policy)) not in ("age", "infinite"):
        raise bad_json(f"Failed to deserialize the JSON body: `{what}` must have exactly one of `age`, `infinite`")
    if "age" in policy:
        age = u64(policy["age"], f"{what}.age")
        if age == 0:
            raise api_error("invalid", "age must be greater than 0 seconds")
        return {"age": age}
    json_object(policy["infinite"], f"{what}.infinite")
    return {"infinite": {}}


def stream_config(value: Any, what: str) -> dict[str, Any]:
    """Parse a ``StreamConfig``; the result holds only the fields that are set."""
    if value is None:
        return {}
    obj = json_object(value, what)
    out: dict[str, Any] = {}
    if obj.get("storage_class") is not None:
        out["storage_class"] = _enum(obj["storage_class"], f"{what}.storage_class", _STORAGE_CLASSES)
    if obj.get("retention_policy") is not None:
        out["retention_policy"] = _retention(obj["retention_policy"], f"{what}.retention_policy")
    if obj.get("timestamping") is not None:
        timestamping = json_object(obj["timestamping"], f"{what}.timestamping")
        nested: dict[str, Any] = {}
        if timestamping.get("mode") is not None:
            nested["mode"] = _enum(timestamping["mode"], f"{what}.timestamping.mode", TIMESTAMPING_MODES)
        uncapped = opt_bool(timestamping.get("uncapped"), f"{what}.timestamping.uncapped")
        if uncapped is not None:
            nested["uncapped"] = uncapped
        if nested:
            out["timestamping"] = nested
    if obj.get("delete_on_empty") is not None:
        delete_on_empty = json_object(obj["delete_on_empty"], f"{what}.delete_on_empty")
        min_age = u64(delete_on_empty.get("min_age_secs", 0), f"{what}.delete_on_empty.min_age_secs")
        if min_age:
            out["delete_on_empty"] = {"min_age_secs": min_age}
    return out


def stream_reconfiguration(value: Any, what: str) -> dict[str, Any]:
    """Parse a ``StreamReconfiguration``: present fields change, ``None`` resets a field."""
    obj = json_object(value, what)
    out: dict[str, Any] = {}
    for key in ("storage_class", "retention_policy"):
        if key in obj:
            out[key] = stream_config({key: obj[key]}, what).get(key)
    if "timestamping" in obj:
        if obj["timestamping"] is None:
            out["timestamping"] = None
        else:
            timestamping = json_object(obj["timestamping"], f"{what}.timestamping")
            nested: dict[str, Any] = {}
            if "mode" in timestamping:
                mode = timestamping["mode"]
                nested["mode"] = None if mode is None else _enum(mode, f"{what}.timestamping.mode", TIMESTAMPING_MODES)
            if "uncapped" in timestamping:
                nested["uncapped"] = opt_bool(timestamping["uncapped"], f"{what}.timestamping.uncapped")
            out["timestamping"] = nested
    if "delete_on_empty" in obj:
        if obj["delete_on_empty"] is None:
            out["delete_on_empty"] = None
        else:
            delete_on_empty = json_object(obj["delete_on_empty"], f"{what}.delete_on_empty")
            if "min_age_secs" in delete_on_empty:
                min_age = opt_u64(delete_on_empty["min_age_secs"], f"{what}.delete_on_empty.min_age_secs")
                out["delete_on_empty"] = {"min_age_secs": min_age or None}
            else:
                out["delete_on_empty"] = {}
    return out


@dataclass(frozen=True)
class BasinConfig:
    create_stream_on_append: bool = False
    create_stream_on_read: bool = False
    default_stream_config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "default_stream_config": dict(self.default_stream_config) or None,
            "stream_cipher": None,
            "create_stream_on_append": self.create_stream_on_append,
            "create_stream_on_read": self.create_stream_on_read,
        }


def basin_config(value: Any, what: str) -> BasinConfig:
    if value is None:
        return BasinConfig()
    obj = json_object(value, what)
    _stream_cipher(obj.get("stream_cipher"), what)
    return BasinConfig(
        create_stream_on_append=bool(opt_bool(obj.get("create_stream_on_append"), f"{what}.create_stream_on_append")),
        create_stream_on_read=bool(opt_bool(obj.get("create_stream_on_read"), f"{what}.create_stream_on_read")),
        default_stream_config=stream_config(obj.get("default_stream_config"), f"{what}.default_stream_config"),
    )


def _stream_cipher(value: Any, what: str) -> None:
    if value is not None:
        _enum(value, f"{what}.stream_cipher", _CIPHERS)
        raise api_error("not_implemented", "stream encryption is not supported by this server")


def basin_reconfigured(current: BasinConfig, value: Any) -> BasinConfig:
    obj = json_object(value, "BasinReconfiguration")
    _stream_cipher(obj.get("stream_cipher"), "BasinReconfiguration")
    config = current
    if "create_stream_on_append" in obj:
        on_append = bool(opt_bool(obj["create_stream_on_append"], "create_stream_on_append"))
        config = dataclasses.replace(config, create_stream_on_append=on_append)
    if "create_stream_on_read" in obj:
        on_read = bool(opt_bool(obj["create_stream_on_read"], "create_stream_on_read"))
        config = dataclasses.replace(config, create_stream_on_read=on_read)
    if "default_stream_config" in obj:
        default: dict[str, Any] = {}
        if obj["default_stream_config"] is not None:
            changes = stream_reconfiguration(obj["default_stream_config"], "default_stream_config")
            default = merge_stream_config(config.default_stream_config, changes)
        config = dataclasses.replace(config, default_stream_config=default)
    return config


def resolved_stream_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's configuration with every default filled in, where neither the stream nor its basin set one."""
    timestamping = config.get("timestamping") or {}
    delete_on_empty = config.get("delete_on_empty") or {}
    return {
        "storage_class": config.get("storage_class") or "express",
        "retention_policy": config.get("retention_policy") or {"age": _DEFAULT_RETENTION_AGE},
        "timestamping": {
            "mode": timestamping.get("mode") or "client-prefer",
            "uncapped": bool(timestamping.get("uncapped")),
        },
        "delete_on_empty": {"min_age_secs": delete_on_empty.get("min_age_secs") or 0},
    }


def merge_stream_config(config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (S2 ``StreamConfig`` JSON) with ``changes`` applied the way S2 applies a reconfiguration.

    Given fields change and ``None`` resets a field to its default; the
    nested ``timestamping`` and ``delete_on_empty`` objects change field by
    field. A stream created with a config gets it this way on top of its
    basin's default stream config.
    """
    out = dict(config)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif key in _NESTED_CONFIG:
            nested = {**(out.get(key) or {}), **value}
            nested = {name: setting for name, setting in nested.items() if setting is not None}
            if nested:
                out[key] = nested
            else:
                out.pop(key, None)
        else:
            out[key] = value
    return out


def check_stream_config(config: dict[str, Any]) -> None:
    timestamping = config.get("timestamping") or {}
    mode = timestamping.get("mode")
    if mode is not None and mode not in TIMESTAMPING_MODES:
        raise api_error("invalid", f"unknown timestamping mode {mode!r}")
    retention = config.get("retention_policy") or {}
    if "age" in retention and not (isinstance(retention["age"], int) and retention["age"] > 0):
        raise api_error("invalid", "retention age must be greater than zero")
