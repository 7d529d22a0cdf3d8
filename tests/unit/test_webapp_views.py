"""Pure helpers of the web app: view models, SSE framing and page rendering."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from string import Template

import pytest

from streamwise_core.adapters.registry import VersionRow
from streamwise_core.contracts.codec import ModelMeta
from streamwise_webapp.page import PAGES, SIGN_IN, Page, PageContext, asset_version, load_templates, render_page, script_json
from streamwise_webapp.sse import sse_comment, sse_event
from streamwise_webapp.views import (
    LiveStatus,
    as_utc,
    current_view,
    finite_metrics,
    history_view,
    live_state,
    primary_metric_name,
    state_key,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def meta(version: int = 3, task: str = "binary", **metrics: float) -> ModelMeta:
    return ModelMeta(
        app="fraud", model="fraud-lr", version=version, task=task, examples_seen=1200,
        metrics=metrics or {"accuracy": 0.94, "accuracy_recent": 0.96, "log_loss": 0.2},
        created_at=T0,
    )


def row(version: int, created_at: datetime = T0, **metrics: float) -> VersionRow:
    return VersionRow(
        app="fraud", model="fraud-lr", version=version, examples_seen=version * 100,
        metrics=metrics or {"accuracy": 0.5 + version / 100}, offsets={}, river_version="x",
        blob_sha256="", key_id="k", created_at=created_at,
    )


class TestCurrentView:
    def test_binary_model_watches_accuracy_and_its_recent_window(self) -> None:
        view = current_view(meta())
        assert (view.app, view.model, view.version, view.examples_seen) == ("fraud", "fraud-lr", 3, 1200)
        assert view.primary_metric == "accuracy"
        assert view.primary_value == pytest.approx(0.94)
        assert view.recent_value == pytest.approx(0.96)
        assert view.recent_window > 0
        assert view.published_at == T0

    def test_regression_model_watches_mae(self) -> None:
        view = current_view(meta(task="regression", mae=1.5, mae_recent=1.2, rmse=2.0))
        assert (view.primary_metric, view.primary_value, view.recent_value) == ("mae", 1.5, 1.2)

    def test_missing_recent_value_is_none(self) -> None:
        assert current_view(meta(accuracy=0.9)).recent_value is None

    def test_json_has_the_fields_the_page_reads(self) -> None:
        data = json.loads(current_view(meta()).model_dump_json())
        assert {"app", "model", "version", "examples_seen", "metrics", "primary_metric", "published_at"} <= set(data)
        assert data["published_at"].endswith("Z") or data["published_at"].endswith("+00:00")


class TestPrimaryMetricName:
    @pytest.mark.parametrize(
        ("task", "expected"), [("binary", "accuracy"), ("multiclass", "accuracy"), ("regression", "mae")]
    )
    def test_known_tasks(self, task: str, expected: str) -> None:
        assert primary_metric_name(task, {}) == expected

    def test_unknown_task_falls_back_to_first_all_time_metric(self) -> None:
        assert primary_metric_name("ranking", {"ndcg_recent": 0.1, "ndcg": 0.2}) == "ndcg"
        assert primary_metric_name("ranking", {}) == "accuracy"


class TestFiniteMetrics:
    def test_drops_nan_infinities_and_non_numbers(self) -> None:
        raw = {"a": 1, "b": 0.5, "nan": math.nan, "inf": math.inf, "s": "x", "flag": True, "none": None}
        assert finite_metrics(raw) == {"a": 1.0, "b": 0.5}


class TestAsUtc:
    def test_naive_is_taken_as_utc(self) -> None:
        assert as_utc(datetime(2025, 1, 1, 12)) == datetime(2025, 1, 1, 12, tzinfo=UTC)

    def test_aware_is_converted(self) -> None:
        plus_two = datetime(2025, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
        converted = as_utc(plus_two)
        assert converted.utcoffset() == timedelta(0)
        assert converted.hour == 12


class TestHistoryView:
    def test_newest_first_rows_become_oldest_first_points(self) -> None:
        points = history_view([row(3), row(2), row(1)])
        assert [p.version for p in points] == [1, 2, 3]
        assert points[0].examples_seen == 100
        assert points[0].metrics == {"accuracy": pytest.approx(0.51)}

    def test_naive_sqlite_times_become_utc(self) -> None:
        [point] = history_view([row(1, created_at=datetime(2025, 1, 1))])
        assert point.created_at.tzinfo is not None

    def test_empty(self) -> None:
        assert history_view([]) == []


class TestLiveState:
    def test_key_changes_with_version_and_status_only(self) -> None:
        v3 = current_view(meta(3))
        a = live_state(LiveStatus.CURRENT, v3, T0)
        b = live_state(LiveStatus.CURRENT, v3, T0 + timedelta(seconds=5))
        assert state_key(a) == state_key(b)
        assert state_key(a) != state_key(live_state(LiveStatus.CURRENT, current_view(meta(4)), T0))
        assert state_key(a) != state_key(live_state(LiveStatus.UNAVAILABLE, v3, T0))
        assert state_key(live_state(LiveStatus.WAITING, None, T0)) == (LiveStatus.WAITING, None)


class TestSse:
    def test_event_with_name_and_retry(self) -> None:
        assert sse_event('{"a":1}', event="state", retry_ms=3000) == b'retry: 3000\nevent: state\ndata: {"a":1}\n\n'

    def test_multiline_data_becomes_several_data_lines(self) -> None:
        assert sse_event("a\nb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"

    def test_unicode_line_separator_is_not_a_line_break(self) -> None:
        assert sse_event("a\u2028b") == "data: a\u2028b\n\n".encode()

    def test_fields_cannot_inject_lines(self) -> None:
        assert sse_event("x", event="a\nb", event_id="1\r2") == b"id: 1 2\nevent: a b\ndata: x\n\n"

    def test_comment(self) -> None:
        assert sse_comment("keep-alive") == b": keep-alive\n\n"


class TestPage:
    def ctx(self, **changes: object) -> PageContext:
        values: dict[str, object] = {
            "app_name": "fraud", "model_name": "fraud-lr", "base": "", "ingest_url": "http://i:1/",
            "predictor_url": "http://p:2", "history_limit": 200, "asset_version": "abc",
        }
        values.update(changes)
        return PageContext(**values)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", sorted(PAGES))
    def test_every_page_renders_with_local_assets_only(self, name: str) -> None:
        page = PAGES[name]
        html = render_page(load_templates(), page, self.ctx())
        assert f"<title>{page.title} · fraud · Streamwise</title>" in html
        assert f'src="/static/{page.script}?v=abc"' in html and 'src="/static/common.js?v=abc"' in html
        assert ('src="/static/vendor/chart.umd.min.js?v=abc"' in html) is page.chart
        assert 'href="/static/app.css?v=abc"' in html
        assert 'href="http://i:1/openapi.json"' in html
        assert "$" not in html
        assert all(src.startswith("/static/") for src in re.findall(r'src="([^"]+)"', html))
        assert f'<a href="{page.path}" aria-current="page">{page.title}</a>' in html

    def test_sign_in_page_has_no_navigation_and_hides_the_account(self) -> None:
        html = render_page(load_templates(), SIGN_IN, self.ctx(), signed_in=False)
        assert 'id="signin-form"' in html and 'src="/static/page-signin.js?v=abc"' in html
        assert 'aria-label="Pages"' not in html
        assert '<div class="account" hidden>' in html

    def test_values_are_escaped(self) -> None:
        templates = {"layout.html": Template("$content|$base"), "x.html": Template("<p>$app_name</p><a href=\"$base/x\">")}
        page = Page("x", "/x", "X", "x.html", "x.js")
        html = render_page(templates, page, self.ctx(app_name="<b>&", base='/a"b/'))
        assert html == '<p>&lt;b&gt;&amp;</p><a href="/a&quot;b/x">|/a&quot;b'

    def test_initial_state_is_embedded_as_json_that_cannot_close_its_script(self) -> None:
        html = render_page(load_templates(), PAGES["app"], self.ctx(initial={"name": "</script><!--"}))
        assert '<script id="initial-state" type="application/json">{"name":"\\u003c/script>\\u003c!--"}</script>' in html
        assert json.loads(script_json({"a": "<b>"})) == {"a": "<b>"}

    def test_asset_version_is_a_stable_short_digest(self) -> None:
        assert asset_version() == asset_version()
        assert len(asset_version()) == 12
