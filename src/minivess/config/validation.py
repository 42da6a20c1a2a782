"""Turn pydantic validation errors into one-line :class:`~minivess.errors.ConfigError` messages.

Every config layer (deployment settings, experiment configs) reports a bad value the same way:
the dotted path of the field, then pydantic's reason, e.g.
``training.optimizer.lr: Input should be greater than 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from minivess.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """``path: reason`` for every error in ``exc``, joined by ``"; "``.

    Args:
        exc: The error pydantic raised.
        prefix: Dotted path of the validated object inside a larger config (``"training"``);
            prepended to every field path.

    Returns:
        One line, e.g. ``"training.seed: Input should be a valid integer"``.

    Example:
        >>> from pydantic import BaseModel, PositiveInt
        >>> class Cfg(BaseModel):
        ...     epochs: PositiveInt
        >>> try:
        ...     Cfg(epochs=0)
        ... except ValidationError as exc:
        ...     print(describe_validation_error(exc, "training"))
        training.epochs: Input should be greater than 0
    """
    parts = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # A cross-field check (no location of its own) names its fields in the message.
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def validate_or_raise(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``model.model_validate(data)``, re-raising failures as one-line :class:`ConfigError`.

    Args:
        model: The pydantic model class.
        data: Raw values (plain containers; nested models as mappings).
        prefix: Dotted path of ``data`` inside a larger config, for the message.

    Returns:
        The validated model.

    Raises:
        ConfigError: A value breaks a rule; the message names every bad field by its path.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix)) from None
