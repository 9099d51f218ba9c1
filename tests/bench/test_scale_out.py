"""The scale-out suite's pure pieces: the provider's buckets and the figures block."""

from __future__ import annotations

from pathlib import Path

from delos.bench._limited_provider import TokenBucket, request_tokens
from delos.bench._results import SuiteResult, Table
from delos.bench._scale_out_report import FIGURES_END, FIGURES_START, refresh_figures


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_its_capacity_per_minute() -> None:
    clock = _Clock()
    bucket = TokenBucket(120.0, clock)
    assert bucket.wait_for(120.0) == 0.0
    bucket.level -= 120.0
    assert bucket.wait_for(1.0) == 0.5  # 2 a second
    clock.now += 0.25
    assert bucket.wait_for(1.0) == 0.25
    clock.now += 600.0
    assert bucket.wait_for(1.0) == 0.0
    assert bucket.level == 120.0  # never above capacity


def test_a_request_counts_its_words_and_its_output_cap() -> None:
    body = {"messages": [{"content": "three words here"}, {"content": "two more"}]}
    assert request_tokens(body) == 5 + 12
    assert request_tokens({**body, "max_tokens": 16}) == 5 + 16
    assert request_tokens({"messages": [], "max_completion_tokens": 4}) == 1 + 4


def _result() -> SuiteResult:
    table = Table("Cache", ("replicas", "upstream calls"), (("shared", "1"),), note="Why.")
    return SuiteResult("scale-out", "Scale-out", "How it ran.", tables=(table,), seconds=90)


def test_the_figures_block_is_replaced_and_the_page_around_it_kept(tmp_path: Path) -> None:
    page = tmp_path / "scale-out.md"
    page.write_text(
        "# Scale-out\n\nBy hand.\n\n<!-- figures: python -m delos.bench._scale_out -->\n\n"
        f"old figures\n\n{FIGURES_END}\n\nAfter.\n"
    )
    assert refresh_figures(page, _result(), command="python -m delos.bench scale-out", date="d")
    text = page.read_text()
    assert text.startswith("# Scale-out\n\nBy hand.\n\n" + FIGURES_START)
    assert text.endswith(FIGURES_END + "\n\nAfter.\n")
    assert "old figures" not in text
    assert "### Cache\n\nWhy.\n\n| replicas | upstream calls |\n|---|---|\n| shared | 1 |" in text
    assert "`python -m delos.bench scale-out` (90 s). How it ran." in text


def test_a_page_without_the_block_is_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "scale-out.md"
    page.write_text("# Scale-out\n")
    assert not refresh_figures(page, _result(), command="c", date="d")
    assert page.read_text() == "# Scale-out\n"
    assert not refresh_figures(tmp_path / "missing.md", _result(), command="c", date="d")
