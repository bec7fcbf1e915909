"""API keys for the models, read through a settings class and held as ``SecretStr``.

The catalogue names the environment variable of each model's key (say
``OPENAI_API_KEY``); this is the one place those variables are read. Keys stay
``SecretStr`` until the request header is built, so a settings dump, a repr or
a log line shows ``**********``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict


class _KeySettings(BaseSettings):
    # No prefix: key variables keep the names their providers document.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


def read_api_keys(env_names: Iterable[str]) -> dict[str, SecretStr]:
    """The keys set in the environment (or a ``.env``-less process env) for ``env_names``."""
    names = sorted(set(env_names))
    if not names:
        return {}
    # Plain field names with the variable as alias: a variable called, say, JSON cannot shadow a model method.
    fields: dict[str, Any] = {
        f"key_{i}": (SecretStr | None, Field(default=None, validation_alias=name)) for i, name in enumerate(names)
    }
    settings = create_model("ApiKeySettings", __base__=_KeySettings, **fields)()
    keys: dict[str, SecretStr] = {}
    for i, name in enumerate(names):
        value = getattr(settings, f"key_{i}")
        if isinstance(value, SecretStr) and value.get_secret_value():
            keys[name] = value
    return keys
