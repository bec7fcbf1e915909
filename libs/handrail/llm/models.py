"""The model catalogue, ``config/models.yaml``: what each model name in a chain means.

Per model: the provider kind (``openai`` for any OpenAI-compatible chat
completions endpoint, ``anthropic``, ``scripted``), the endpoint, the name of
the environment variable holding its API key (never the key itself), the
request timeout, the retries, and the price table used to turn the provider's
reported token usage into ``cost_usd``. Shared retry and breaker settings sit
beside the models. Validated at start-up with messages naming the file, the
model and the field; the built-in ``scripted`` model is always there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from handrail.errors import ContractError
from handrail.llm.retry import RetryPolicy

CATALOGUE_FILE = "models.yaml"
_TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderKind(StrEnum):
    """Which API shape a model speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    SCRIPTED = "scripted"


class Price(_Strict):
    """USD per million tokens, as the provider bills them."""

    input_usd_per_1m: float = Field(default=0.0, ge=0)
    output_usd_per_1m: float = Field(default=0.0, ge=0)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What ``input_tokens`` in and ``output_tokens`` out cost."""
        return (input_tokens * self.input_usd_per_1m + output_tokens * self.output_usd_per_1m) / _TOKENS_PER_PRICE_UNIT


class ModelSpec(_Strict):
    """One model a chain may name."""

    name: str
    provider: ProviderKind
    base_url: str | None = Field(default=None, pattern=r"^https?://", description="The API root.")
    api_model: str | None = Field(default=None, description="The model id the API knows; default: the name.")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable with the API key."
    )
    #: "authorization" sends ``Bearer <key>``; any other header (Azure's ``api-key``) gets the bare key.
    api_key_header: str = "authorization"
    query_params: dict[str, str] = Field(default_factory=dict, description="E.g. Azure's api-version.")
    timeout_s: float = Field(default=30.0, gt=0, description="Whole request, connect to last byte.")
    max_retries: int = Field(default=2, ge=0, le=10, description="Attempts after the first on this model.")
    max_output_tokens: int = Field(default=1024, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    price: Price = Field(default_factory=Price)
    tokenizer: str | None = Field(
        default=None,
        description="The encoding prompts are counted with (o200k_base, cl100k_base ...) or `estimate`; "
        "default: looked up from the model id for OpenAI models, the estimate otherwise (handrail.llm.tokens).",
    )

    @property
    def api_model_id(self) -> str:
        """The model id sent to the API."""
        return self.api_model or self.name

    @model_validator(mode="after")
    def _endpoint_matches_kind(self) -> ModelSpec:
        if self.provider != ProviderKind.SCRIPTED and not self.base_url:
            raise ValueError(f"field 'base_url': required for provider {self.provider.value!r}")
        if self.provider == ProviderKind.SCRIPTED and (self.base_url or self.api_key_env):
            raise ValueError("the scripted provider takes no base_url or api_key_env")
        from handrail.llm.tokens import ESTIMATE, known_encoding  # it counts with these specs

        if self.tokenizer is not None and not known_encoding(self.tokenizer):
            raise ValueError(f"field 'tokenizer': unknown encoding {self.tokenizer!r} (or {ESTIMATE!r})")
        return self


class RetryDefaults(_Strict):
    """Back-off shared by every model; attempts come from each model's ``max_retries``."""

    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_total_s: float = Field(default=60.0, gt=0)
    max_retry_after_s: float = Field(default=20.0, ge=0)


class BreakerDefaults(_Strict):
    """Per-model breakers in each worker: open after consecutive failures, probe after ``open_s``."""

    failure_threshold: int = Field(default=5, ge=1)
    open_s: float = Field(default=30.0, gt=0)


SCRIPTED = ModelSpec(name="scripted", provider=ProviderKind.SCRIPTED)


class ModelCatalogue(_Strict):
    """Every model a chain may name, with the shared retry and breaker settings."""

    models: dict[str, ModelSpec] = Field(default_factory=lambda: {"scripted": SCRIPTED})
    retry: RetryDefaults = Field(default_factory=RetryDefaults)
    breaker: BreakerDefaults = Field(default_factory=BreakerDefaults)
    source: str = Field(default="(built-in)", description="Where it was read from, for error messages.")

    def get(self, name: str) -> ModelSpec:
        """Model ``name``, or ContractError naming the catalogue and what it declares."""
        try:
            return self.models[name]
        except KeyError:
            raise ContractError(f"{self.source}: unknown model {name!r}; declared: {sorted(self.models)}") from None

    def retry_policy(self, name: str) -> RetryPolicy:
        """The retry policy for model ``name``."""
        spec, retry = self.get(name), self.retry
        return RetryPolicy(
            max_attempts=spec.max_retries + 1,
            base_delay_s=retry.base_delay_s,
            max_delay_s=retry.max_delay_s,
            max_total_s=retry.max_total_s,
            max_retry_after_s=retry.max_retry_after_s,
        )

    def check_chains(self, chains: Mapping[str, Iterable[str]], source: str = "agents.yaml") -> None:
        """Every model each chain names is declared here, or ContractError.

        ``chains`` maps who uses the chain (``agent 'expense-intake'``) to its models; ``source`` is their file.
        """
        for user, chain in chains.items():
            for i, name in enumerate(chain):
                if name not in self.models:
                    raise ContractError(
                        f"{source}: {user}: field 'model_chain.{i}': unknown model {name!r} "
                        f"({self.source} declares {sorted(self.models)})"
                    )


def load_catalogue(config_dir: Path) -> ModelCatalogue:
    """Read ``config_dir/models.yaml``; without one, only the built-in ``scripted`` model exists."""
    path = config_dir / CATALOGUE_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return ModelCatalogue(source=str(path))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ContractError(f"{path}: expected a mapping with a top-level 'models' mapping")
    unknown = set(raw) - {"models", "retry", "breaker"}
    if unknown:
        raise ContractError(f"{path}: unknown top-level keys {sorted(unknown)}")
    models: dict[str, ModelSpec] = {"scripted": SCRIPTED}
    for name, body in raw["models"].items():
        if not isinstance(body, dict):
            raise ContractError(f"{path}: model {name!r}: expected a mapping")
        models[str(name)] = _validate(path, f"model {name!r}", ModelSpec, {**body, "name": str(name)})
    if models["scripted"].provider != ProviderKind.SCRIPTED:
        raise ContractError(f"{path}: model 'scripted': field 'provider': the name 'scripted' is the built-in model")
    sections = {k: raw[k] for k in ("retry", "breaker") if raw.get(k) is not None}
    return _validate(path, "catalogue", ModelCatalogue, {**sections, "models": models, "source": str(path)})


def _validate(path: Path, what: str, model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc']) or '(entry)'!r}: {e['msg']}" for e in exc.errors()
        )
        raise ContractError(f"{path}: {what}: {problems}") from None
