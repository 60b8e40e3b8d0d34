"""The support-desk console in a real browser: `shoprouter serve` on 127.0.0.1, Debian's Chromium headless,
driven by Playwright (no browser download: `executable_path` is the system Chromium).

A screenshot of every page goes to a `screenshots` directory under pytest's temporary directory (its path
is printed); with SHOPROUTER_DOCS_SCREENSHOT=1 the hand-off queue's is also copied to docs/console.png,
the README's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from .service_support import AUTH, REPO, TEST_KEY, Service, copy_shop, shop_db_path  # noqa: F401

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect
CHROMIUM = os.environ.get("SHOPROUTER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed (apt-get install -y chromium)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LABELS = ["order", "search", "details", "returns", "account", "payment", "technical", "clarify", "none"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, shop_db_path):  # noqa: F811
    work = tmp_path_factory.mktemp("console")
    svc = Service(f"sqlite:///{work / 'conversations.sqlite3'}", copy_shop(shop_db_path, work / "shop"), work).start()
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log_text(), svc.log_text()[-3000:]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("screenshots")
    print(f"\nconsole screenshots in {d}")
    return d


class Watch:
    """Page errors, dialogs (an alert() would be an XSS) and requests that leave the server."""

    def __init__(self, page, base: str):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.outside: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                and "401" not in m.text and "403" not in m.text else None)

        def dialog(d):
            if d.type == "confirm" and d.message.startswith("Erase this conversation"):
                d.accept()
            else:
                self.dialogs.append(d.message)
                d.dismiss()

        page.on("dialog", dialog)

        def guard(route):
            url = route.request.url
            if url.startswith(base) or url.startswith("data:"):
                route.continue_()
            else:
                self.outside.append(url)
                route.abort()

        page.route("**/*", guard)

    def check(self):
        assert self.errors == [] and self.dialogs == [] and self.outside == [], (self.errors, self.dialogs,
                                                                                 self.outside)


def new_page(browser, server, bypass_csp: bool = False):
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True, bypass_csp=bypass_csp)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    return ctx, page, Watch(page, server.url)


def login(page, server, key: str = TEST_KEY, hash_: str = "#/playground"):
    page.goto(server.url + "/" + hash_)
    page.fill("#login-key", key)
    page.click("#login-btn")
    page.wait_for_selector("body[data-ready='1']")


def test_console_end_to_end(server, browser, shots):
    ctx, page, watch = new_page(browser, server)
    # 1. the console answers 401 with the sign-in form; a wrong key is refused; the right one signs in
    resp = page.goto(server.url + "/#/playground")
    assert resp.status == 401 and page.is_visible("#login-form")
    page.fill("#login-key", "sr_wrong-key-0123456789abcdefgh")
    page.click("#login-btn")
    expect(page.locator("#login-error")).not_to_have_text("")
    page.screenshot(path=str(shots / "01-login.png"))
    page.fill("#login-key", TEST_KEY)
    page.click("#login-btn")
    page.wait_for_selector("body[data-ready='1']")
    assert page.is_visible("#page-playground") and page.inner_text("#who").startswith("tester")

    # 2. playground: route a message, see a bar per label, the decision, the agent's reply and the latency
    page.fill("#pg-text", "where is my order 10023?")
    page.click("#pg-send")
    card = page.locator(".turn-card").first
    card.wait_for()
    assert card.get_attribute("data-decision") == "order"
    bars = card.locator(".bar")
    assert bars.count() == len(LABELS)
    assert [bars.nth(i).get_attribute("data-label") for i in range(len(LABELS))] == LABELS
    chosen = card.locator(".bar.chosen")
    assert chosen.get_attribute("data-label") == "order" and float(chosen.get_attribute("data-p")) > 0.9
    width = chosen.locator(".fill").evaluate("e => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width")
    assert 0.9 < width <= 1.0
    assert "order agent" in card.locator(".reply-box").inner_text()
    assert "routing" in card.locator(".latency").inner_text() and "ms" in card.locator(".latency").inner_text()
    # route only: nothing stored, the decision and bars all the same
    page.check("input[name=pg-mode][value=route]")
    page.fill("#pg-text", "my card was declined")
    page.click("#pg-send")
    expect(page.locator(".turn-card")).to_have_count(2)
    assert page.locator(".turn-card").first.get_attribute("data-decision") == "payment"
    page.screenshot(path=str(shots / "02-playground.png"), full_page=True)

    # a clarifying question in the first conversation
    page.check("input[name=pg-mode][value=conversation]")
    page.fill("#pg-text", "I have a problem with my order and a refund")
    page.click("#pg-send")
    expect(page.locator(".turn-card")).to_have_count(3)
    clarify = page.locator(".turn-card").first
    assert clarify.get_attribute("data-decision") == "clarify"
    assert "Is this about your order, or a return or refund?" in clarify.locator(".clarify-box").inner_text()

    # 3. a whole conversation that ends with a hand-off to a human
    page.click("#pg-new")
    page.fill("#pg-text", "where is my order?\nmy sneakers fell apart after a week")
    page.click("#pg-send")
    expect(page.locator(".turn-card")).to_have_count(2)
    top = page.locator(".turn-card").first
    assert top.get_attribute("data-decision") == "none"
    assert "Handed to a human (out of scope)" in top.locator(".handoff-box").inner_text()
    cid = page.locator("#pg-conv a").inner_text()
    assert len(cid) == 32
    page.screenshot(path=str(shots / "03-playground-handoff.png"), full_page=True)

    # 4. the hand-off queue: pick it up, reply, correct the label, resolve
    page.click("#nav a[data-page=queue]")
    item = page.locator(f".queue-item[data-id='{cid}']")
    item.wait_for()
    assert "out of scope" in item.inner_text()
    assert page.inner_text("#queue-count") == "1"
    item.click()
    page.wait_for_selector("#queue-detail .turn[data-seq='2']")
    assert "Why: out of scope" in page.inner_text("#queue-detail .why")
    page.fill("#queue-detail .reply-text", "Hi, Sam from support here. Sorry about the sneakers: I've started a return.")
    page.click("#queue-detail .reply-send")
    page.wait_for_selector("#queue-detail .turn.human[data-seq='3']")
    assert "Sam from support" in page.inner_text("#queue-detail .turn.human")
    turn2 = page.locator("#queue-detail .turn[data-seq='2']")
    turn2.locator("select.label-select").select_option("returns")
    turn2.locator(".label-save").click()
    page.wait_for_selector("#queue-detail .turn[data-seq='2'] .tag.corrected")
    assert "corrected → returns by tester" in page.inner_text("#queue-detail .turn[data-seq='2'] .tag.corrected")
    page.screenshot(path=str(shots / "04-queue.png"), full_page=True)
    page.click("#queue-detail .resolve-btn")
    page.wait_for_selector("#queue-empty")
    assert page.inner_text("#queue-count") == ""

    # 5. the correction is exported as a training row
    page.click("#nav a[data-page=corrections]")
    page.wait_for_selector(".corr-row")
    with page.expect_download() as dl:
        page.click("#export-link")
    path = dl.value.path()
    rows = [json.loads(x) for x in Path(path).read_text().splitlines()]
    assert rows == [{"text": "my sneakers fell apart after a week", "label": "returns",
                     "history": [{"text": "where is my order?", "label": "order"}],
                     "group": f"correction/{cid}/2"}]
    page.screenshot(path=str(shots / "05-corrections.png"), full_page=True)

    # 6. conversations: search, open one, every turn with its decision and confidence
    page.click("#nav a[data-page=conversations]")
    page.fill("#conv-q", "sneakers")
    page.click("#conv-search")
    expect(page.locator(".conv-row")).to_have_count(1)
    expect(page.locator(".conv-row")).to_have_attribute("data-id", cid)
    page.screenshot(path=str(shots / "06-conversations.png"), full_page=True)
    page.click(f".conv-row[data-id='{cid}']")
    page.wait_for_selector("#conv-detail .turn[data-seq='3']")
    assert page.inner_text("#conv-id") == cid
    first = page.locator("#conv-detail .turn[data-seq='1']")
    assert first.locator(".pill").first.inner_text() == "order" and "95.0%" in first.locator(".conf").inner_text()
    assert "resolved" in page.inner_text("#conv-detail")
    page.screenshot(path=str(shots / "07-conversation.png"), full_page=True)

    # 7. overview: decision mix, rates, latency over time from the service's own metrics
    page.click("#nav a[data-page=overview]")
    page.wait_for_selector("#ov-routings")
    assert int(page.inner_text("#ov-routings .v")) >= 4
    assert page.inner_text("#ov-handoff .v") != "–" and "ms" in page.inner_text("#ov-p95 .v")
    assert page.locator("#ov-mix .bar").count() >= 3
    assert page.locator("#ov-latency svg path.series").count() == 2
    page.screenshot(path=str(shots / "08-overview.png"), full_page=True)

    # 8. erase the conversation from its page
    page.goto(server.url + f"/#/conversations/{cid}")
    page.wait_for_selector("#conv-delete")
    page.click("#conv-delete")
    page.wait_for_selector(".conv-row, #conv-list p.muted")
    assert httpx.get(f"{server.url}/v1/conversations/{cid}", headers=AUTH).status_code == 404

    # sign out: the console is closed again
    page.click("#logout")
    page.wait_for_selector("#login-form")
    assert page.evaluate("fetch('/v1/handoffs').then(r => r.status)") == 401
    watch.check()
    if os.environ.get("SHOPROUTER_DOCS_SCREENSHOT"):
        shutil.copyfile(shots / "04-queue.png", REPO / "docs" / "console.png")
    ctx.close()


HOSTILE = ["<script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">',
           '"><svg onload="window.__xss = 3"></svg>', "<b>bold?</b> &amp; <a href='javascript:alert(4)'>x</a>"]


def test_customer_text_is_escaped_everywhere(server, browser, shots):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        cid = c.post("/v1/conversations", json={"metadata": {"note": "<img src=x onerror=window.__xss=5>"}}).json()["id"]
        for text in HOSTILE:
            assert c.post(f"/v1/conversations/{cid}/messages", json={"text": text}).status_code == 200
        c.post(f"/v1/conversations/{cid}/replies", json={"text": "<img src=x onerror=\"window.__xss = 6\">"})
        c.put(f"/v1/conversations/{cid}/turns/1/label", json={"label": "technical"})
    # without the Content-Security-Policy (which would block inline script anyway): escaping alone must hold
    ctx, page, watch = new_page(browser, server, bypass_csp=True)
    login(page, server)

    def assert_inert():
        assert page.evaluate("window.__xss") is None
        assert page.locator("main img, main svg:not(.svgchart), main script, main b:text('bold?')").count() == 0

    page.goto(server.url + f"/#/conversations/{cid}")
    page.wait_for_selector("#conv-detail .turn[data-seq='5']")
    texts = page.locator("#conv-detail .customer-text").all_inner_texts()
    assert texts == HOSTILE  # shown as the text the customer typed
    assert '<img src=x onerror="window.__xss = 6">' in page.inner_text("#conv-detail .turn.human")
    assert "onerror=window.__xss=5" in page.inner_text("#conv-detail")
    assert_inert()
    page.screenshot(path=str(shots / "09-escaped-conversation.png"), full_page=True)

    page.goto(server.url + "/#/conversations")
    page.fill("#conv-q", "<script>")
    page.click("#conv-search")
    expect(page.locator(".conv-row").first).to_be_visible()
    assert "<b>bold?</b>" in page.inner_text("#conv-list") or "window.__xss" in page.inner_text("#conv-list")
    assert_inert()

    page.goto(server.url + f"/#/queue/{cid}")
    page.wait_for_selector("#queue-detail .turn[data-seq='5']")
    assert HOSTILE[0] in page.inner_text("#queue-list")
    assert_inert()
    page.screenshot(path=str(shots / "10-escaped-queue.png"), full_page=True)

    page.goto(server.url + "/#/playground")
    page.check("input[name=pg-mode][value=route]")
    page.fill("#pg-text", "\n".join(HOSTILE))
    page.click("#pg-send")
    expect(page.locator(".turn-card")).to_have_count(len(HOSTILE))
    assert sorted(page.locator(".turn-card .customer-text").all_inner_texts()) == sorted(HOSTILE)
    page.goto(server.url + "/#/corrections")
    page.wait_for_selector(".corr-row")
    page.goto(server.url + "/#/overview")
    page.wait_for_selector("#ov-routings")
    assert_inert()
    watch.check()
    ctx.close()


def test_without_credentials_the_browser_gets_nothing(server, browser):
    ctx, page, watch = new_page(browser, server)
    for path in ("/#/queue", "/login", "/#/conversations"):  # (a page in between: a hash change loads nothing)
        resp = page.goto(server.url + path)
        if path == "/login":
            assert resp.status == 200
            continue
        assert resp.status == 401 and page.is_visible("#login-form")
        assert page.locator("#page-queue").count() == 0
    statuses = page.evaluate("""async () => {
        const out = [];
        for (const [m, p] of [['GET', '/v1/handoffs'], ['GET', '/v1/conversations'], ['GET', '/v1/overview'],
                              ['GET', '/v1/corrections/export'], ['GET', '/metrics'],
                              ['DELETE', '/v1/conversations/x'], ['POST', '/v1/route']]) {
            out.push((await fetch(p, {method: m})).status);
        }
        return out;
    }""")
    assert statuses == [401] * 7
    # the login page itself and the health check stay reachable
    assert page.goto(server.url + "/login").status == 200 and page.goto(server.url + "/healthz").status == 200
    watch.check()
    ctx.close()
