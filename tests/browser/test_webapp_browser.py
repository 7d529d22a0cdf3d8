"""The web app in a real browser (Debian's headless Chromium through Playwright) against the
whole suite on Apache Kafka: every page loads without console errors (screenshots saved), live
updates arrive without a reload, a feedback click becomes a label the trainer learns, the
promote and rollback buttons change the version the predictor serves, pin buttons pin, and a
viewer can do neither."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from ..e2e.loop_client import API_KEY, wait_for
from .conftest import DESKTOP, PHONE, Session, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
MODEL = "fraud-lr"
PAGES = {"/": "#predict-form button", "/models": "#versions tr", "/system": "#services li", "/audit": "#audit tr"}

WIDER_THAN_SCREEN = """Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !(e.parentElement && e.parentElement.closest('.table-wrap')))
  .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""

FEATURES = {"amount": 1890.0, "hour": 3, "distance_km": 840.0, "is_foreign": True, "card_present": False,
            "merchant": "electronics", "txn_last_hour": 1}


def test_every_page_loads_without_console_errors(trained: Stack, sign_in: Callable[..., Session]) -> None:
    anonymous = sign_in(None)
    anonymous.page.wait_for_selector("#signin-form")
    anonymous.screenshot("signin")
    assert anonymous.page.locator("nav.pages").count() == 0
    assert httpx.get(f"{trained.url('webapp')}/api/v1/feed", timeout=10).status_code == 401

    for viewport, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
        session = sign_in("olivia", viewport)
        for path, ready in PAGES.items():
            session.goto(trained, path)
            session.page.wait_for_selector(ready)
            current = session.page.locator('nav.pages a[aria-current="page"]').get_attribute("href")
            assert current == path
            name = "app" if path == "/" else path.strip("/")
            session.screenshot(f"{name}-{label}")
            # Keyboard: the first Tab reaches the skip link, and following it focuses the content.
            session.page.keyboard.press("Tab")
            assert session.page.evaluate("document.activeElement.className") == "skip-link"
            session.page.keyboard.press("Enter")
            assert session.page.evaluate("document.activeElement.id") == "main"
            # Nothing wider than the screen: the layout reflows on a phone (tables scroll in their box).
            width = session.page.evaluate("document.documentElement.scrollWidth")
            wide = session.page.evaluate(WIDER_THAN_SCREEN)
            assert width <= viewport["width"], f"{path} is {width}px wide on a {viewport['width']}px screen: {wide}"


def test_a_live_update_arrives_without_reload(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("olivia")
    page = session.page
    page.wait_for_selector("#predict-form button")
    page.evaluate("window.__notReloaded = true")
    shown = page.inner_text("#version")
    event_id = f"live-{uuid.uuid4().hex[:8]}"
    # Labelled events: the trainer publishes a new version; the event itself enters the feed.
    trained.send_events([{"id": event_id, "features": FEATURES, "label": True}] + [
        {"id": f"{event_id}-{i}", "features": {**FEATURES, "amount": 10.0 + i, "is_foreign": False}, "label": False}
        for i in range(120)
    ])
    page.wait_for_selector(f'li[data-event-id="{event_id}"]', timeout=30_000)
    page.wait_for_function("shown => document.getElementById('version').textContent !== shown", arg=shown, timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.inner_text("#connection") == "Live"
    served = trained.served()
    assert served is not None and page.inner_text("#version") == f"v{served['meta']['version']}"
    session.screenshot("app-live-update")


def test_the_form_asks_the_champion_for_a_prediction(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("victor")  # a viewer may ask
    page = session.page
    page.wait_for_selector("#predict-form button")
    page.fill("#f-amount", "1890")
    page.fill("#f-hour", "3")
    page.fill("#f-distance_km", "840")
    page.select_option("#f-is_foreign", "true")
    page.select_option("#f-merchant", "electronics")
    page.fill("#f-txn_last_hour", "1")
    page.click("#predict-form button[type=submit]")
    result = page.locator("#predict-result")
    result.wait_for()
    served = trained.served()
    assert served is not None
    assert f"{MODEL} v{served['meta']['version']}" in result.inner_text() and "sure" in result.inner_text()
    page.fill("#f-hour", "")
    page.fill("#f-amount", "")
    page.click("#predict-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('predict-result').textContent.includes('No prediction')")
    assert "amount" in result.inner_text()
    session.errors[:] = [e for e in session.errors if "status of 422" not in e]  # the refusal it was sent
    session.screenshot("app-predict")


def _settled(stack: Stack) -> dict[str, object]:
    """The trainer's status once it has learned every event and label in Kafka now (ingest acknowledged
    them: they are there) and recorded its versions in the registry. Two equal readings a moment apart
    would not do: a busy trainer can pause that long with records still to learn."""
    last = stack.last_offsets()
    assert last, "no events in Kafka: the wrong topics?"

    def caught_up() -> dict[str, object] | None:
        status = stack.trainer_status()
        learned: dict[str, int] = status["offsets"]
        done = all(learned.get(key, -1) >= offset for key, offset in last.items()) and status["registry_backlog"] == 0
        return status if done else None

    return wait_for(caught_up, 60, "the trainer to learn everything sent so far", interval_s=0.2)


def test_a_feedback_click_becomes_a_label_the_trainer_learns(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("olivia")
    page = session.page
    page.wait_for_selector("#predict-form button")
    event_id = f"fb-{uuid.uuid4().hex[:8]}"
    before = _settled(trained)
    trained.send_events([{"id": event_id, "features": FEATURES}])  # no label: only the person knows
    item = page.locator(f'li[data-event-id="{event_id}"]')
    item.wait_for(timeout=30_000)
    # The trainer holds the event, waiting for its label; nothing is learned from it yet.
    wait_for(lambda: trained.trainer_status()["waiting_features"] > before["waiting_features"], 30,  # type: ignore[operator]
             "the event held")
    waiting = trained.trainer_status()
    assert waiting["examples_seen"] == before["examples_seen"]

    item.locator("button[data-action=correct]").click()
    item.locator(".outcome").wait_for()
    assert "wrong" in item.locator(".outcome").inner_text()

    learned = wait_for(lambda: (s := trained.trainer_status())["examples_seen"] == waiting["examples_seen"] + 1 and s,
                       30, "the label learned")
    assert learned["learned_digest"] != waiting["learned_digest"]
    assert learned["waiting_features"] == waiting["waiting_features"] - 1
    audit = httpx.get(f"{trained.url('webapp')}/api/v1/audit", params={"action": "feedback", "actor": "olivia"},
                      headers=API_KEY, timeout=10).json()
    assert audit["items"][0]["details"]["event_id"] == event_id
    assert audit["items"][0]["reason"] == "corrected"
    session.screenshot("app-feedback")


def _versions_page(session: Session, stack: Stack) -> None:
    session.goto(stack, "/models")
    session.page.wait_for_selector("#versions tr")


def test_promote_and_rollback_buttons_change_the_served_version(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("olivia")
    page = session.page
    _versions_page(session, trained)
    served = trained.served()
    assert served is not None
    newest = served["meta"]["version"]
    button = page.locator("button[data-action=rollback]").first
    target = int(button.get_attribute("data-version") or 0)
    assert 0 < target < newest

    button.click()
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")  # no reason yet: refused in the page
    assert page.locator("#confirm-error").is_visible()
    page.fill("#confirm-reason", "browser test: roll back")
    page.click("#confirm-ok")
    wait_for(lambda: (s := trained.served()) and s["meta"]["version"] == target, 30, f"v{target} served")
    page.wait_for_selector(f"button[data-action=promote][data-version='{newest}']", timeout=30_000)
    session.screenshot("models-after-rollback")

    page.click(f"button[data-action=promote][data-version='{newest}']")
    page.fill("#confirm-reason", "browser test: promote again")
    page.click("#confirm-ok")
    wait_for(lambda: (s := trained.served()) and s["meta"]["version"] == newest, 30, f"v{newest} served")
    audit = httpx.get(f"{trained.url('webapp')}/api/v1/audit", params={"model": MODEL}, headers=API_KEY, timeout=10).json()
    moves = [(e["action"], e["actor"], e["version_to"], e["reason"]) for e in audit["items"][:2]]
    assert moves == [("promote", "olivia", newest, "browser test: promote again"),
                     ("rollback", "olivia", target, "browser test: roll back")]


def test_pin_and_unpin_buttons_and_the_versions_pager(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("olivia")
    page = session.page
    _versions_page(session, trained)
    rows = page.locator("#versions tr").count()
    assert page.locator("#versions-newer").is_disabled()  # the first page: the newest versions
    assert page.locator("#versions-older").is_disabled() == (rows < 30)
    assert page.locator("#versions-range").inner_text().startswith("v")
    button = page.locator("button[data-action=pin]").first
    version = button.get_attribute("data-version")
    button.click()
    page.wait_for_selector("#confirm[open]")
    page.fill("#confirm-reason", "browser test: pin")
    page.click("#confirm-ok")
    page.wait_for_selector(f"button[data-action=unpin][data-version='{version}']", timeout=30_000)
    session.screenshot("models-pinned")
    page.click(f"button[data-action=unpin][data-version='{version}']")
    page.fill("#confirm-reason", "browser test: unpin")
    page.click("#confirm-ok")
    page.wait_for_selector(f"button[data-action=pin][data-version='{version}']", timeout=30_000)
    audit = httpx.get(f"{trained.url('webapp')}/api/v1/audit", params={"model": MODEL}, headers=API_KEY, timeout=10).json()
    assert [(e["action"], e["actor"], e["version_to"]) for e in audit["items"][:2]] == [
        ("unpin", "olivia", int(version or 0)), ("pin", "olivia", int(version or 0))]


def test_a_viewer_cannot_promote(trained: Stack, sign_in: Callable[..., Session]) -> None:
    session = sign_in("victor")
    page = session.page
    _versions_page(session, trained)
    assert page.locator("#versions tr").count() >= 2
    assert page.locator("button[data-action]").count() == 0
    assert not page.locator("#add-challenger").is_visible()
    session.screenshot("models-viewer")
    page.goto("/")
    page.wait_for_selector("#predict-form button")
    assert page.locator("#feed button[data-action]").count() == 0

    served = trained.served()
    assert served is not None
    older = served["meta"]["version"] - 1
    # The API refuses too, with the viewer's own session and CSRF token, from the page itself.
    status = page.evaluate(
        """async ([model, version]) => {
            const me = await (await fetch('/api/v1/me')).json();
            const r = await fetch(`/api/v1/models/${model}/rollback`, {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token},
                body: JSON.stringify({version, reason: 'viewer tries'})});
            return [me.role, r.status];
        }""",
        [MODEL, older],
    )
    assert status == ["viewer", 403]
    # The browser reports the refused request it was made to send; that one is expected.
    refused = [e for e in session.errors if "status of 403" in e]
    assert len(refused) == 1
    session.errors.remove(refused[0])
    after = trained.served()
    assert after is not None and after["meta"]["version"] == served["meta"]["version"]
    session.screenshot("app-viewer")
