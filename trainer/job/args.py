"""`key=value` lists as sd-scripts takes them (network_args, optimizer_args)."""

from __future__ import annotations


def arg_value(args: list[str] | None, key: str) -> str | None:
    """The value of `key=value` in a network_args-style list."""
    for item in args or []:
        name, _, value = item.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def arg_flag(args: list[str] | None, key: str) -> bool:
    """A true/false entry as sd-scripts reads it ("True", "true", "1")."""
    return (arg_value(args, key) or "").lower() in ("true", "1", "yes")


def int_arg(args: list[str] | None, key: str) -> int | None:
    value = arg_value(args, key)
    return int(value) if value else None
