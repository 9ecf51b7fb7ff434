# SPDX-License-Identifier: Apache-2.0
"""PriceBook: genai-prices pricing, cache awareness, overrides, unknown models."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from otel_agents import ConfigError, ModelPriceOverride, PriceBook, load_price_overrides
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
    cold = book.price(model="gpt-4o", provider="openai", input_tokens=10_000, output_tokens=0)
    warm = book.price(
        model="gpt-4o",
        provider="openai",
        input_tokens=10_000,
        output_tokens=0,
        cache_read_tokens=8_000,
    )
    assert cold is not None and warm is not None
    assert warm.amount < cold.amount
    assert cold.amount == pytest.approx(10_000 * 2.5 / 1e6)


def test_reasoning_tokens_are_not_added_on_top_of_output() -> None:
    """Reasoning tokens are part of output tokens, so passing them does not change the price."""
    book = PriceBook()
    a = book.price(model="o3-mini", provider="openai", input_tokens=100, output_tokens=1000)
    b = book.price(
        model="o3-mini",
        provider="openai",
        input_tokens=100,
        output_tokens=1000,
        reasoning_tokens=800,
    )
    assert a == b


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
    price = book.price(
        model="gpt-4o-2024-08-06",
        provider="openai",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=500_000,
    )
    assert price is not None
    assert price.amount == pytest.approx(0.5 * 1.0 + 0.5 * 0.5 + 2.0)
    assert (price.currency, price.price_source) == ("EUR", "override")
    private = book.price(
        model="acme/my-private-llm", provider=None, input_tokens=100_000, output_tokens=0
    )
    assert private is not None and private.amount == pytest.approx(1.0)


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
    price = PriceBook().price(
        model="house-model",
        provider=None,
        input_tokens=2_000_000,
        output_tokens=0,
        cache_creation_tokens=1_000_000,
    )
    assert price is not None and price.amount == pytest.approx(3.0 + 3.75)
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
