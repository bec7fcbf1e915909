"""API keys for the models, read through a settings class and held as ``SecretStr``.

The catalogue names the environment variable of each model's key (say
``OPENAI_API_KEY``); this is the one place those variables are read. Keys stay
``SecretStr`` until the request header is built, so a settings dump, a repr or
a log line shows ``**********``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict


class _KeySettings(BaseSettings):
    # No prefix: key variables keep the names their providers document.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


def read_api_keys(env_names: Iterable[str]) -> dict[str, SecretStr]:
    """The keys set in the environment (or a ``.env``-less process env) for ``env_names``."""
    names = sorted(set(env_names))
    if not names:
        return {}
    fields: dict[str, Any] = {name.lower(): (SecretStr | None, None) for name in names}
    settings_class = create_model("ApiKeySettings", __base__=_KeySettings, **fields)
    settings = settings_class()
    keys: dict[str, SecretStr] = {}
    for name in names:
        value = getattr(settings, name.lower())
        if isinstance(value, SecretStr) and value.get_secret_value():
            keys[name] = value
    return keys
