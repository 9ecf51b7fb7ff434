# SPDX-License-Identifier: Apache-2.0
"""PriceBook: genai-prices pricing, cache awareness, overrides, unknown models."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_agents import ConfigError, ModelPriceOverride, Price, PriceBook, load_price_overrides
from otel_agents.environment_variables import OTEL_AGENTS_PRICES_FILE


@pytest.fixture(autouse=True)
def _no_prices_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OTEL_AGENTS_PRICES_FILE, raising=False)


def reference(
    model: str, provider: str | None, when: datetime | None = None, **tokens: int
) -> float:
    """The amount genai-prices itself computes."""
    usage = Usage(
        input_tokens=tokens.get("input_tokens", 0),
        output_tokens=tokens.get("output_tokens", 0),
        cache_read_tokens=tokens.get("cache_read_tokens", 0),
        cache_write_tokens=tokens.get("cache_creation_tokens", 0),
    )
    return float(
        calc_price(usage, model, provider_id=provider, genai_request_timestamp=when).total_price
    )


def priced(book: PriceBook, model: str, provider: str | None = "openai", **tokens: int) -> Price:
    """``book``'s price of one call (``input_tokens``/``output_tokens`` default 0); must be priced."""
    tokens = {"input_tokens": 0, "output_tokens": 0, **tokens}
    price = book.price(model=model, provider=provider, **tokens)
    assert price is not None, f"{model} is unpriced"
    return price


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o", "openai"),
        ("gpt-4o-mini", "openai"),
        ("claude-3-5-sonnet", "anthropic"),
        ("claude-3-5-haiku", "anthropic"),
        ("o3-mini", "openai"),
    ],
)
def test_known_models_match_genai_prices(model: str, provider: str) -> None:
    """Cached linear pricing equals genai-prices' own calculation, cache tokens included."""
    book = PriceBook()
    tokens = {
        "input_tokens": 12_345,
        "output_tokens": 678,
        "cache_read_tokens": 4_000,
        "cache_creation_tokens": 1_000,
    }
    price = book.price(model=model, provider=provider, **tokens)
    assert price is not None
    assert price.amount > 0
    assert price.currency == "USD"
    assert price.source == "local"
    assert price.price_source == "genai-prices"
    assert price.amount == pytest.approx(reference(model, provider, **tokens), rel=1e-9)


def test_time_dependent_prices_use_the_request_timestamp() -> None:
    """A model whose price depends on time is priced by genai-prices at the given timestamp."""
    book = PriceBook()
    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
    # DeepSeek has off-peak (UTC night) prices in the genai-prices data.
    day = datetime(2025, 6, 2, 10, 0, tzinfo=timezone.utc)
    night = datetime(2025, 6, 2, 17, 30, tzinfo=timezone.utc)
    amounts = []
    for when in (day, night):
        price = book.price(model="deepseek-chat", provider="deepseek", timestamp=when, **tokens)
        assert price is not None
        assert price.amount == pytest.approx(reference("deepseek-chat", "deepseek", when, **tokens))
        amounts.append(price.amount)
    assert amounts[1] < amounts[0]  # the off-peak price really was applied


def test_cache_reads_are_cheaper_than_uncached_input() -> None:
    """Moving input tokens from uncached to cache-read lowers the price (cache-aware)."""
    book = PriceBook()
    cold = priced(book, "gpt-4o", input_tokens=10_000)
    warm = priced(book, "gpt-4o", input_tokens=10_000, cache_read_tokens=8_000)
    assert warm.amount < cold.amount
    assert cold.amount == pytest.approx(10_000 * 2.5 / 1e6)


def test_reasoning_tokens_are_not_added_on_top_of_output() -> None:
    """Reasoning tokens are part of output tokens, so passing them does not change the price."""
    book = PriceBook()
    plain = priced(book, "o3-mini", input_tokens=100, output_tokens=1000)
    assert (
        priced(book, "o3-mini", input_tokens=100, output_tokens=1000, reasoning_tokens=800) == plain
    )


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-2024-08-06", None),
        ("openai/gpt-4o", None),
        ("gpt-4o", "azure.ai.openai"),
        ("GPT-4o", "openai"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("anthropic/claude-3-5-sonnet-20241022", None),
    ],
)
def test_model_name_forms_resolve(model: str, provider: str | None) -> None:
    """Dated ids, provider/model names, GenAI provider names and case variants resolve to a price."""
    price = PriceBook().price(model=model, provider=provider, input_tokens=1000, output_tokens=100)
    assert price is not None and price.amount > 0


def test_unknown_model_is_unpriced_not_zero() -> None:
    """An unknown model returns None, never a zero price."""
    book = PriceBook()
    assert (
        book.price(model="my-private-llm-7b", provider=None, input_tokens=5, output_tokens=5)
        is None
    )
    assert (
        book.price(model="my-private-llm-7b", provider="acme", input_tokens=5, output_tokens=5)
        is None
    )
    assert book.price(model="", provider="openai", input_tokens=5, output_tokens=5) is None


def test_override_wins_and_matches_dated_and_prefixed_names() -> None:
    """A user override replaces the bundled price and matches dated and provider-prefixed ids."""
    book = PriceBook(
        {
            "gpt-4o": ModelPriceOverride(input=1.0, output=2.0, cache_read=0.5, currency="EUR"),
            "my-private-llm": ModelPriceOverride(input=10.0, output=20.0),
        }
    )
    price = priced(
        book,
        "gpt-4o-2024-08-06",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=500_000,
    )
    assert price.amount == pytest.approx(0.5 * 1.0 + 0.5 * 0.5 + 2.0)
    assert (price.currency, price.price_source) == ("EUR", "override")
    private = priced(book, "acme/my-private-llm", None, input_tokens=100_000)
    assert private.amount == pytest.approx(1.0)


def test_overrides_load_from_yaml_and_json_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_AGENTS_PRICES_FILE (YAML) and a JSON file both load overrides."""
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text(
        "models:\n  house-model:\n    input: 3\n    output: 15\n    cache_write: 3.75\n"
    )
    json_file = tmp_path / "prices.json"
    json_file.write_text(
        json.dumps({"models": {"other": {"input": 1, "output": 1, "currency": "GBP"}}})
    )
    monkeypatch.setenv(OTEL_AGENTS_PRICES_FILE, str(yaml_file))
    price = priced(
        PriceBook(), "house-model", None, input_tokens=2_000_000, cache_creation_tokens=1_000_000
    )
    assert price.amount == pytest.approx(3.0 + 3.75)
    loaded = load_price_overrides(json_file)
    assert loaded == {"other": ModelPriceOverride(input=1.0, output=1.0, currency="GBP")}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models:\n  m:\n    input: 1\n", "output"),
        ("models:\n  m:\n    input: 1\n    output: 1\n    colour: red\n", "models.m.colour"),
        ("models:\n  m:\n    input: -1\n    output: 1\n", "models.m.input"),
        (
            "models:\n  m:\n    input: 1\n    output: 1\n    currency: dollars\n",
            "models.m.currency",
        ),
        ("models: [1, 2\n", "not valid"),
    ],
)
def test_invalid_override_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    """Bad override files raise ConfigError naming the offending key."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_price_overrides(path)


def test_missing_prices_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prices file that does not exist is reported with the variable's name."""
    monkeypatch.setenv(OTEL_AGENTS_PRICES_FILE, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=OTEL_AGENTS_PRICES_FILE):
        PriceBook()


def test_lookup_cache_is_bounded() -> None:
    """A flood of distinct unknown model ids does not grow the lookup cache without bound."""
    book = PriceBook()
    for i in range(5000):
        book.price(model=f"bogus-{i}", provider="nobody", input_tokens=1, output_tokens=1)
    assert len(book._cache) <= 4096


TIERED = [
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-5-5", "anthropic"),
    ("gemini-1.5-pro", "google"),
    ("gemini-2.5-pro", "google"),
    ("gpt-5.6-luna", "github-copilot"),
]


def _tier_starts(model: str, provider: str) -> list[int]:
    """Every tier threshold of the model's genai-prices ``ModelPrice`` (fails if it has none)."""
    from genai_prices.types import TieredPrices

    calc = calc_price(Usage(input_tokens=0, output_tokens=0), model, provider_id=provider)
    starts = sorted(
        {
            t.start
            for v in vars(calc.model_price).values()
            if isinstance(v, TieredPrices)
            for t in v.tiers
        }
    )
    assert starts, f"{model} is no longer tiered in genai-prices"
    return starts


@pytest.mark.parametrize(("model", "provider"), TIERED)
def test_tiered_models_match_genai_prices_at_and_around_every_threshold(
    model: str, provider: str
) -> None:
    """Tiered models are priced locally, equal to genai-prices at, just below and just above
    each threshold, with and without cache read/write tokens."""
    from otel_agents._cost import _Stepped

    book = PriceBook()
    assert isinstance(book._resolve(model, provider), _Stepped)  # compiled, not per-call
    for start in _tier_starts(model, provider):
        for inp in (start - 1, start, start + 1, 2 * start):
            for read, write in ((0, 0), (inp // 3, 0), (0, inp // 5), (inp // 4, inp // 6)):
                tokens = {
                    "input_tokens": inp,
                    "output_tokens": 1_234,
                    "cache_read_tokens": read,
                    "cache_creation_tokens": write,
                }
                price = book.price(model=model, provider=provider, **tokens)
                assert price is not None and price.price_source == "genai-prices"
                assert price.amount == pytest.approx(
                    reference(model, provider, **tokens), rel=1e-12, abs=1e-15
                ), tokens


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    case=st.sampled_from(TIERED),
    inp=st.integers(0, 600_000),
    out=st.integers(0, 100_000),
    read_frac=st.floats(0.0, 1.0),
    write_frac=st.floats(0.0, 1.0),
)
def test_tiered_prices_equal_genai_prices_for_random_usage(
    case: tuple[str, str], inp: int, out: int, read_frac: float, write_frac: float
) -> None:
    """Property: for random token usages (cache read + write within the input) the compiled
    tier steps give genai-prices' own ``calc_price`` amount."""
    model, provider = case
    read = int(inp * read_frac)
    write = int((inp - read) * write_frac)
    tokens = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": read,
        "cache_creation_tokens": write,
    }
    price = PriceBook().price(model=model, provider=provider, **tokens)
    assert price is not None
    assert price.amount == pytest.approx(reference(model, provider, **tokens), rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    inp=st.integers(0, 1_200_000),
    read_frac=st.floats(0.0, 1.0),
    write_frac=st.floats(0.0, 1.0),
)
def test_multi_tier_prices_with_per_key_thresholds_equal_genai_prices(
    inp: int, read_frac: float, write_frac: float
) -> None:
    """Several tiers per key, different thresholds per key and an untiered key compile to
    steps that equal ``ModelPrice.calc_price`` (tiers chosen by total input tokens)."""
    from decimal import Decimal as D

    from genai_prices.types import ModelPrice, Tier, TieredPrices

    from otel_agents._cost import _stepped

    mp = ModelPrice(
        input_mtok=TieredPrices(
            base=D("3"),
            tiers=[Tier(start=500_000, price=D("9")), Tier(start=128_000, price=D("6"))],
        ),
        output_mtok=TieredPrices(base=D("15"), tiers=[Tier(start=200_000, price=D("22.5"))]),
        cache_read_mtok=D("0.3"),
        cache_write_mtok=TieredPrices(
            base=D("3.75"), tiers=[Tier(start=128_000, price=D("7.5")), Tier(start=1, price=D("4"))]
        ),
    )
    stepped = _stepped(mp)
    assert stepped is not None and stepped.thresholds == (1, 128_000, 200_000, 500_000)
    read = int(inp * read_frac)
    write = int((inp - read) * write_frac)
    out = 4_321
    want = mp.calc_price(
        Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write)
    )["total_price"]
    assert stepped.amount(inp, out, read, write) == pytest.approx(float(want), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("model", "provider", "overrides"),
    [
        ("gpt-4o", "openai", None),
        ("claude-sonnet-4-5", "anthropic", None),  # tiered
        ("house-model", None, {"house-model": ModelPriceOverride(input=1.0, output=2.0)}),
        ("no-such-model-xyz", None, None),
    ],
)
def test_enricher_writes_exactly_what_price_returns(
    model: str, provider: str | None, overrides: dict[str, ModelPriceOverride] | None
) -> None:
    """The enricher's positional quote path writes price()'s amount, currency and source, the price source only for overrides (or the unpriced mark)."""
    from otel_agents import SpanEnricher
    from otel_agents import semconv as sc

    book = PriceBook(overrides or {})
    enricher = SpanEnricher(book)
    ts = int(datetime(2025, 6, 1, tzinfo=timezone.utc).timestamp() * 1e9)
    for inp, out, cr, cc in ((1000, 200, 0, 0), (250_000, 10, 1000, 500)):
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_USAGE_INPUT_TOKENS: inp,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: out,
            sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cr,
            sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: cc,
        }
        if provider is not None:
            attrs[sc.GEN_AI_PROVIDER_NAME] = provider
        price = book.price(
            model=model,
            provider=provider,
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cr,
            cache_creation_tokens=cc,
            timestamp=ts,
        )
        out_attrs = enricher.enrich(attrs, ts)
        assert out_attrs is not None
        if price is None:
            assert out_attrs[sc.AGENT_COST_UNPRICED] is True
            assert sc.GEN_AI_USAGE_COST_AMOUNT not in out_attrs
        else:
            # The price source is exported only when it is not the bundled table.
            default = price.price_source == "genai-prices"
            assert (
                out_attrs[sc.GEN_AI_USAGE_COST_AMOUNT],
                out_attrs[sc.GEN_AI_USAGE_COST_CURRENCY],
                out_attrs[sc.GEN_AI_USAGE_COST_SOURCE],
                out_attrs.get(sc.AGENT_COST_PRICE_SOURCE),
            ) == (price.amount, price.currency, price.source, None if default else "override")
