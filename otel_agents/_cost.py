# SPDX-License-Identifier: Apache-2.0
"""Token pricing: the ``genai-prices`` data set plus user overrides.

Shared by the SDK's enriching processor and the receiver, which calls :meth:`PriceBook.price`
once per inference span, so lookups are cached:

* model resolution (``provider``/``model`` → genai-prices model, or "unknown") is cached per
  ``(model, provider)``;
* for models whose price does not depend on time or tiers (almost all), the per-million prices
  are cached as floats and the amount is computed directly — the same leaf decomposition as
  ``genai_prices.calc_price`` (uncached input = input − cache read − cache write when those are
  priced separately), verified against it in the tests;
* tiered prices (genai-prices ``TieredPrices``: crossing a threshold of the call's *total input
  tokens* moves every token of that price to the tier's rate) are compiled into exact steps:
  ``(threshold, linear prices)`` pairs, picked by bisecting the input-token count — the same
  ``input_tokens > tier.start`` rule genai-prices applies, verified against it in the tests;
* models with time-dependent prices resolve their ``ModelPrice`` at the span's timestamp (each
  distinct one compiled once); only prices with a per-request fee are computed by genai-prices
  itself for every call.

Token semantics follow the GenAI conventions, which match genai-prices' model:
``input_tokens`` *includes* cache-read and cache-write tokens; ``output_tokens`` *includes*
reasoning tokens. ``reasoning_tokens`` is therefore accepted for completeness but never added on
top (that would double count); no provider in the data set prices reasoning separately.

An unknown model is priced as ``None`` — never 0 — so callers can mark it
``agent.cost.unpriced=true`` and count it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from otel_agents._configtypes import decode
from otel_agents._errors import ConfigError
from otel_agents.environment_variables import OTEL_AGENTS_PRICES_FILE

__all__ = ["ModelPriceOverride", "Price", "PriceBook", "load_price_overrides"]

logger = logging.getLogger(__name__)

PRICE_SOURCE_GENAI_PRICES: Final = "genai-prices"
PRICE_SOURCE_OVERRIDE: Final = "override"
_USD: Final = "USD"
_PER: Final = 1_000_000.0
_CACHE_LIMIT: Final = 4096

# GenAI ``gen_ai.provider.name`` well-known values → genai-prices provider ids, where they differ.
_PROVIDER_IDS: Final[Mapping[str, str]] = {
    "aws.bedrock": "aws",
    "azure.ai.inference": "azure",
    "azure.ai.openai": "azure",
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "ibm.watsonx.ai": "ibm",
}
# Dated model ids: gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, model@20240620.
_DATE_SUFFIX: Final = re.compile(r"(?:[-@_]\d{4}-?\d{2}-?\d{2}|-\d{4})$")


@dataclasses.dataclass(frozen=True)
class Price:
    """The cost of one inference call.

    Attributes:
        amount: cost in ``currency`` units.
        currency: ISO 4217 code (genai-prices data is ``USD``).
        source: ``gen_ai.usage.cost.source`` value: ``local`` (we priced it) or ``provider``.
        price_source: where the price came from: ``genai-prices`` or ``override``.
    """

    amount: float
    currency: str
    source: str
    price_source: str


@dataclasses.dataclass(frozen=True)
class ModelPriceOverride:
    """A user price for one model, per million tokens.

    Attributes:
        input: price of one million (uncached) input tokens.
        output: price of one million output tokens (reasoning tokens included).
        cache_read: price of one million cache-read input tokens; ``None`` prices them as input.
        cache_write: price of one million cache-write input tokens; ``None`` prices them as input.
        currency: ISO 4217 currency code.
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    currency: str = _USD

    def validate(self) -> list[str]:
        """Return key-named problems (used by the YAML decoder)."""
        problems = [
            f"{name}: must not be negative"
            for name in ("input", "output", "cache_read", "cache_write")
            if (getattr(self, name) or 0.0) < 0
        ]
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            problems.append(
                f"currency: expected an ISO 4217 code such as 'USD', got {self.currency!r}"
            )
        return problems


@dataclasses.dataclass(frozen=True)
class _PricesFile:
    models: dict[str, ModelPriceOverride] = dataclasses.field(default_factory=dict)


def load_price_overrides(path: str | os.PathLike[str]) -> dict[str, ModelPriceOverride]:
    """Read price overrides from a YAML or JSON file (``models: {name: {input, output, ...}}``).

    Raises:
        ConfigError: the file cannot be read or is invalid; the message names the key path.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{OTEL_AGENTS_PRICES_FILE}: cannot read {p}: {exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data: Any = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise ConfigError(f"{p}: not valid JSON/YAML: {exc}") from None
    except Exception as exc:  # yaml.YAMLError does not derive from ValueError
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return dict(decode(_PricesFile, data).models)


@dataclasses.dataclass(frozen=True)
class _Linear:
    """Per-token prices of a model whose price does not vary with time or volume."""

    input: float
    output: float
    cache_read: float | None
    cache_write: float | None
    currency: str
    price_source: str

    def amount(self, inp: int, out: int, cache_read: int, cache_write: int) -> float:
        uncached = inp
        total = 0.0
        if self.cache_read is not None:
            uncached -= cache_read
            total += cache_read * self.cache_read
        if self.cache_write is not None:
            uncached -= cache_write
            total += cache_write * self.cache_write
        return total + max(uncached, 0) * self.input + out * self.output


@dataclasses.dataclass(frozen=True)
class _Stepped:
    """Tiered prices as steps: ``linears[i]`` applies when the call's input tokens exceed
    ``thresholds[i - 1]`` (and ``linears[0]``, the base prices, up to ``thresholds[0]``)."""

    thresholds: tuple[int, ...]
    linears: tuple[_Linear, ...]

    def amount(self, inp: int, out: int, cache_read: int, cache_write: int) -> float:
        # bisect_left counts the thresholds strictly below ``inp``: genai-prices applies a tier
        # when ``total_input_tokens > tier.start``.
        step = self.linears[bisect.bisect_left(self.thresholds, inp)]
        return step.amount(inp, out, cache_read, cache_write)


class _Dynamic:
    """A genai-prices model whose price depends on the request time or needs genai-prices."""

    __slots__ = ("compiled", "model", "provider")

    def __init__(self, model: Any, provider: Any) -> None:
        self.model = model
        self.provider = provider
        # id(ModelPrice) -> (ModelPrice kept alive so the id stays unique, compiled form or None)
        self.compiled: dict[int, tuple[object, _Linear | _Stepped | None]] = {}


class PriceBook:
    """Prices inference calls from token counts.

    Overrides win over the bundled ``genai-prices`` data. They are matched by exact model id,
    then ``provider/model``, then the model id without a date suffix
    (``gpt-4o-2024-08-06`` → ``gpt-4o``). genai-prices does its own matching (dated ids,
    ``provider/model`` prefixes, provider aliases).

    Thread-safe; lookups are cached (bounded).

    Args:
        overrides: per-model price overrides. When ``None``, they are read from the file named by
            :envvar:`OTEL_AGENTS_PRICES_FILE` if set.

    Raises:
        ConfigError: the overrides file named by the environment variable is invalid.
    """

    def __init__(self, overrides: Mapping[str, ModelPriceOverride] | None = None) -> None:
        if overrides is None:
            path = os.environ.get(OTEL_AGENTS_PRICES_FILE, "").strip()
            overrides = load_price_overrides(path) if path else {}
        self._overrides: dict[str, _Linear] = {
            name.lower(): _Linear(
                input=o.input / _PER,
                output=o.output / _PER,
                cache_read=None if o.cache_read is None else o.cache_read / _PER,
                cache_write=None if o.cache_write is None else o.cache_write / _PER,
                currency=o.currency,
                price_source=PRICE_SOURCE_OVERRIDE,
            )
            for name, o in overrides.items()
        }
        self._cache: dict[tuple[str, str | None], _Linear | _Stepped | _Dynamic | None] = {}
        self._lock = threading.Lock()

    def price(
        self,
        *,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
        timestamp: datetime | int | None = None,
    ) -> Price | None:
        """Price one inference call.

        Args:
            model: model id (request or, better, response model); ``provider/model`` accepted.
            provider: ``gen_ai.provider.name`` or a genai-prices provider id, if known.
            input_tokens: input tokens, cached ones included (GenAI convention).
            output_tokens: output tokens, reasoning ones included (GenAI convention).
            cache_read_tokens: the part of ``input_tokens`` read from the provider's cache.
            cache_creation_tokens: the part of ``input_tokens`` written to the cache.
            reasoning_tokens: the part of ``output_tokens`` spent reasoning; not added again.
            timestamp: when the request was made (for time-dependent prices), as a datetime or
                as Unix epoch nanoseconds (a span's ``start_time``); default now. Only
                converted for the few models whose price depends on time.

        Returns:
            The price, or ``None`` when the model is unknown (never 0 for unknown).
        """
        del reasoning_tokens  # already inside output_tokens; see the module docstring
        quote = self._quote(
            model,
            provider,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            timestamp,
        )
        return None if quote is None else Price(*quote)

    def _quote(
        self,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_creation_tokens: int,
        timestamp: datetime | int | None,
    ) -> tuple[float, str, str, str] | None:
        """:meth:`price` as a plain ``(amount, currency, source, price_source)`` tuple.

        The SDK enricher's per-span path: positional arguments and no frozen-dataclass
        construction (which alone cost more than the arithmetic).
        """
        resolved = self._resolve(model, provider)
        if resolved is None:
            return None
        if isinstance(resolved, _Linear):
            amount = resolved.amount(
                input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens
            )
            return (amount, resolved.currency, "local", resolved.price_source)
        if isinstance(resolved, _Stepped):
            amount = resolved.amount(
                input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens
            )
            return (amount, _USD, "local", PRICE_SOURCE_GENAI_PRICES)
        price = self._price_dynamic(
            resolved,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            timestamp,
        )
        if price is None:
            return None
        return (price.amount, price.currency, price.source, price.price_source)

    def _resolve(self, model: str, provider: str | None) -> _Linear | _Stepped | _Dynamic | None:
        key = (model, provider)
        try:
            return self._cache[key]
        except KeyError:
            pass
        resolved = self._lookup(model, provider)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                # Model ids are low-cardinality in practice; a flood of bogus ids must not grow
                # memory without bound, and a full reset is cheap to recover from.
                self._cache.clear()
            self._cache[key] = resolved
        return resolved

    def _lookup(self, model: str, provider: str | None) -> _Linear | _Stepped | _Dynamic | None:
        name = model.strip().lower()
        if not name:
            return None
        candidates = [name]
        if provider:
            candidates.append(f"{provider.lower()}/{name}")
        undated = _DATE_SUFFIX.sub("", name)
        if undated != name:
            candidates.append(undated)
        if "/" in name:
            candidates.append(name.rsplit("/", 1)[1])
        for candidate in candidates:
            override = self._overrides.get(candidate)
            if override is not None:
                return override
        return _lookup_genai_prices(name, provider)

    @staticmethod
    def _price_dynamic(
        resolved: _Dynamic,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_creation_tokens: int,
        timestamp: datetime | int | None,
    ) -> Price | None:
        if timestamp is None:
            when = _now()
        elif isinstance(timestamp, datetime):
            when = timestamp
        else:
            when = datetime.fromtimestamp(timestamp / 1e9, tz=timezone.utc)
        model_price = resolved.model.get_prices(when)
        entry = resolved.compiled.get(id(model_price))
        if entry is None:
            entry = (model_price, _linear(model_price) or _stepped(model_price))
            resolved.compiled[id(model_price)] = entry
        linear = entry[1]
        if linear is not None:
            amount = linear.amount(
                input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens
            )
            return Price(amount, _USD, "local", PRICE_SOURCE_GENAI_PRICES)
        from genai_prices import Usage

        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_creation_tokens,
        )
        calc = resolved.model.calc_price(usage, resolved.provider, genai_request_timestamp=when)
        return Price(float(calc.total_price), _USD, "local", PRICE_SOURCE_GENAI_PRICES)


def _now() -> datetime:
    return datetime.now(tz=timezone.utc)


def _lookup_genai_prices(name: str, provider: str | None) -> _Linear | _Stepped | _Dynamic | None:
    """Resolve a model through genai-prices' own matching; ``None`` when it does not know it."""
    from genai_prices import Usage, calc_price

    attempts: list[tuple[str, str | None]] = []
    if provider:
        attempts.append((name, _PROVIDER_IDS.get(provider.lower(), provider.lower())))
    if "/" in name:
        prefix, rest = name.split("/", 1)
        attempts.append((rest, _PROVIDER_IDS.get(prefix, prefix)))
        attempts.append((rest, None))
    attempts.append((name, None))
    probe = Usage(input_tokens=0, output_tokens=0)
    try:
        for model_ref, provider_id in attempts:
            try:
                calc = calc_price(probe, model_ref, provider_id=provider_id)
            except LookupError:
                continue
            return _compile(calc.model, calc.provider)
        return None
    finally:
        _bound_snapshot_caches()


def _bound_snapshot_caches() -> None:
    """genai-prices memoises every ``(model, provider)`` it was asked about, misses included,
    without a bound (``DataSnapshot._provider_cache`` / ``_provider_misses``): under unique
    model names (RC-13) that grew ~400 B per name.  Cleared like our own cache at the limit."""
    from genai_prices import data_snapshot

    snap = data_snapshot.get_snapshot()
    for name in ("_provider_cache", "_provider_misses", "_lookup_cache"):
        cache = getattr(snap, name, None)
        if cache is not None and len(cache) > _CACHE_LIMIT:
            cache.clear()


def _compile(model: Any, provider: Any) -> _Linear | _Stepped | _Dynamic:
    """A cached linear (or stepped, when tiered) price when the model's price does not depend
    on time, else a per-call resolver.

    ``price_variants`` (service tiers) only apply with a genai-prices ``price_context``, which
    spans do not carry, so they do not make a model dynamic.
    """
    from genai_prices.types import ModelPrice

    if isinstance(model.prices, ModelPrice):
        static = _linear(model.prices) or _stepped(model.prices)
        if static is not None:
            return static
    return _Dynamic(model, provider)


def _linear(prices: Any) -> _Linear | None:
    """The linear form of one genai-prices ``ModelPrice``; ``None`` when it needs genai-prices."""
    inp, out = prices.input_mtok, prices.output_mtok
    read, write = prices.cache_read_mtok, prices.cache_write_mtok
    if not all(v is None or isinstance(v, Decimal) for v in (inp, out, read, write)):
        return None  # tiered prices
    # A per-request fee is charged per call whatever the tokens; leave it to genai-prices.
    if getattr(prices, "requests_kcount", None) is not None:
        return None
    return _Linear(
        input=_per_token(inp) or 0.0,
        output=_per_token(out) or 0.0,
        cache_read=_per_token(read),
        cache_write=_per_token(write),
        currency=_USD,
        price_source=PRICE_SOURCE_GENAI_PRICES,
    )


_PRICE_KEYS: Final = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def _stepped(prices: Any) -> _Stepped | None:
    """Tiered ``ModelPrice`` → exact steps; ``None`` when it is not (only) tiered token prices.

    Every price key may have its own tiers; the steps are the union of all thresholds, each
    carrying, per key, the rate genai-prices picks for an input-token count in that step.
    """
    from genai_prices.types import TieredPrices

    if getattr(prices, "requests_kcount", None) is not None:
        return None
    values = [getattr(prices, k) for k in _PRICE_KEYS]
    if not all(v is None or isinstance(v, (Decimal, TieredPrices)) for v in values):
        return None
    thresholds = sorted({t.start for v in values if isinstance(v, TieredPrices) for t in v.tiers})
    if not thresholds:
        return None

    def rate(v: Decimal | TieredPrices | None, above: int | None) -> float | None:
        if not isinstance(v, TieredPrices):
            return _per_token(v)
        chosen = v.base
        if above is not None:  # the highest tier whose start this step lies above
            for tier in v.tiers:
                if above >= tier.start:
                    chosen = tier.price
        return _per_token(chosen)

    linears = []
    for above in (None, *thresholds):
        inp, out, read, write = (rate(v, above) for v in values)
        linears.append(
            _Linear(
                input=inp or 0.0,
                output=out or 0.0,
                cache_read=read,
                cache_write=write,
                currency=_USD,
                price_source=PRICE_SOURCE_GENAI_PRICES,
            )
        )
    return _Stepped(tuple(thresholds), tuple(linears))


def _per_token(per_million: object) -> float | None:
    if isinstance(per_million, Decimal):
        return float(per_million) / _PER
    return None
