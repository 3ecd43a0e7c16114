"""The admin console end to end, in real headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import Proxy

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def browser():
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


async def open_console(browser: Browser, proxy: Proxy, width: int = 1366, height: int = 860) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=proxy.admin.url)
    page = await context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"unexpected browser dialog: {dialog.message}"))
    await page.goto(proxy.admin.url + "/")
    return page


async def sign_in(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#keys")).to_be_visible()


def row(page: Page, name: str):
    return page.locator("#key-rows tr", has=page.locator("span.name", has_text=name))


async def test_console_manages_keys_end_to_end(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    OUTPUT.mkdir(exist_ok=True)
    page = await open_console(browser, proxy)

    # sign in: a wrong token is refused with a message, the right one opens the list
    await page.fill("#token", "not-the-token")
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#sign-in-error")).to_have_text("That token was refused.")
    await sign_in(page, proxy.admin.token)
    assert proxy.admin.token not in page.url
    assert await page.evaluate("sessionStorage.getItem('gateway-admin-token')") == proxy.admin.token

    # create
    await page.fill("#new-name", "Orders sync")
    await page.fill("#new-account", "acme")
    await page.click("#create")
    await expect(page.locator("#new-key")).to_be_visible()
    secret = await page.locator("#new-key-value").text_content()
    assert secret and len(secret) == 32
    orders = row(page, "Orders sync")
    await expect(orders).to_have_count(1)
    await expect(page.locator("#usage span[data-account=acme]")).to_have_text("acme: 1 / 500 keys")
    masked = f"{secret[:4]}****{secret[-4:]}"
    await expect(orders.locator(".secret")).to_have_text(masked)

    # reveal, then hide
    await orders.locator("button.reveal").click()
    await expect(orders.locator(".secret")).to_have_text(secret)
    await orders.locator("button.reveal").click()
    await expect(orders.locator(".secret")).to_have_text(masked)

    # copy the value to the clipboard
    await orders.locator("button.copy-value").click()
    await expect(page.locator("#notice")).to_have_text("Key copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    # detail panel: rename
    await orders.locator("button.details").click()
    await expect(page.locator("#detail")).to_be_visible()
    await page.fill("#detail-name", "Orders v2")
    await page.click("#rename-form button[type=submit]")
    orders = row(page, "Orders v2")
    await expect(orders).to_have_count(1)
    await expect(page.locator("#detail-title")).to_have_text("Orders v2")

    # listed apps
    await page.check("input[name=apps-mode][value=list]")
    for app in ("A1", "A2"):
        await page.fill("#app-input", app)
        await page.click("#app-add")
    await page.click("#app-list li:has-text('A2') button")
    await page.click("#apps-save")
    await expect(orders.locator("td[data-label=Apps]")).to_have_text("A1")

    # listed interfaces, picked from the catalogue
    await page.check("#catalogue input[value=data]")
    await page.check("#catalogue input[value='workflow.approval_comments']")
    await page.click("#interfaces-save")
    await expect(orders.locator("td[data-label=Interfaces]")).to_have_text("data, workflow.approval_comments")
    key_id = await orders.get_attribute("data-id")
    _, stored = await proxy.admin.call("GET", f"/api/v1/keys/{key_id}")
    assert stored["apps"] == ["A1"] and stored["interfaces"] == ["data", "workflow.approval_comments"]

    # whitelist: a valid entry, then an invalid one whose API message shows by the field
    await page.fill("#ip-input", "127.0.0.*")
    await page.click("#ip-add")
    await expect(page.locator("#ip-list li")).to_have_count(1)
    await expect(page.locator("#ip-count")).to_have_text("1 / 50")
    await page.fill("#ip-input", "2001:db8::1")
    await page.click("#ip-add")
    await expect(page.locator("#ip-error")).to_contain_text("IPv6")
    await page.fill("#ip-input", "10.1.*.*")
    await page.click("#ip-add")
    await expect(page.locator("#ip-error")).to_contain_text("more than one '*'")
    await expect(page.locator("#ip-list li")).to_have_count(1)
    await page.screenshot(path=OUTPUT / "console-detail.png")
    await page.click("#detail-close")

    # the proxy honours the key; the status switch turns it off at once
    status, _ = await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=secret)
    assert status == 200
    await orders.locator(".switch input").uncheck()
    await expect(orders.locator(".status")).to_have_text("Disabled")
    status, body = await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=secret)
    assert (status, body["reason"]) == (403, "key_disabled")
    await orders.locator(".switch input").check()
    await expect(orders.locator(".status")).to_have_text("Enabled")

    # copy the whole key: a new secret, the same scopes
    await orders.locator("button.copy-key").click()
    await expect(page.locator("#key-rows tr")).to_have_count(2)
    copied = await page.locator("#new-key-value").text_content()
    assert copied and copied != secret
    await expect(page.locator("#usage span[data-account=acme]")).to_have_text("acme: 2 / 500 keys")
    await page.reload()  # the token survives a reload of the tab
    await expect(page.locator("#key-rows tr")).to_have_count(2)
    await page.screenshot(path=OUTPUT / "console-list.png", full_page=True)

    # delete, with a confirmation that shows the last use and warns
    await row(page, "Orders v2").first.locator("button.delete").click()
    dialog = page.locator("#confirm-delete")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#delete-last-used")).not_to_have_text("Never")
    await expect(dialog).to_contain_text("Make sure no client still uses this key")
    await page.click("#delete-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    status, _ = await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=secret)
    assert status == 401

    # a narrow screen gets cards instead of a table
    narrow = await open_console(browser, proxy, width=390, height=844)
    await sign_in(narrow, proxy.admin.token)  # a new tab: sessionStorage starts empty
    await expect(narrow.locator("#key-rows tr")).to_have_count(1)
    await narrow.screenshot(path=OUTPUT / "console-narrow.png", full_page=True)
    await narrow.context.close()

    # sign out forgets the token
    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('gateway-admin-token')") is None


async def test_user_strings_render_as_text_and_csp_is_strict(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    hostile = "<img src=x onerror=alert(1)>"
    # the account's own rule keeps markup out of it (letters, digits, . _ - @ :); names and
    # app ids may hold anything printable
    await proxy.admin.create(name=hostile, account="a.b_c-d@e:f", apps=["<script>alert(2)</script>"])
    page = await open_console(browser, proxy)
    response = await page.goto(proxy.admin.url + "/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    await sign_in(page, proxy.admin.token)
    hostile_row = row(page, hostile)
    await expect(hostile_row).to_have_count(1)
    assert await hostile_row.locator("span.name").text_content() == hostile
    assert await page.locator("#key-rows img").count() == 0
    assert await page.locator("#key-rows script").count() == 0
    await expect(page.locator("#usage span")).to_have_text("a.b_c-d@e:f: 1 / 500 keys")
    # the page works with inline script forbidden: no script tag carries code
    html = await page.content()
    scripts = await page.locator("script").evaluate_all("nodes => nodes.map(n => [n.src, n.textContent])")
    assert all(src and not text for src, text in scripts), scripts
    assert hostile not in html.replace("&lt;", "<").split("<tbody")[0]  # nowhere but in text nodes
    # no token in any URL the console asked for
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.reload()
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    assert requested and not any(proxy.admin.token in url for url in requested)
    assert json.dumps(requested)


async def test_lifecycle_in_the_console(start_proxy, browser: Browser) -> None:
    """Expiry badges and the week's warning, rotation with a grace period, and the tokens page."""
    from datetime import UTC, datetime, timedelta

    proxy: Proxy = await start_proxy()
    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    await proxy.admin.create(name="Soon", expires_at=soon)
    expiring = await proxy.admin.create(name="Gone", expires_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat())
    rotating = await proxy.admin.create(name="Rotating")
    page = await open_console(browser, proxy)
    await page.wait_for_timeout(1100)  # "Gone" is past its expiry now
    await sign_in(page, proxy.admin.token)
    await expect(row(page, "Gone").locator(".badge.expired")).to_have_text("Expired")
    await expect(row(page, "Soon").locator(".badge.expiring")).to_contain_text("Expires")
    await expect(page.locator("#expiry-warning")).to_have_text("1 key will expire within a week.")
    assert (await proxy.json("GET", "/api/v5/app/list", key=expiring["key"]))[1]["reason"] == "key_expired"

    # rotate with a one-hour grace: the new secret is shown once, the old one still works
    await row(page, "Rotating").locator("button.rotate").click()
    await page.select_option("#rotate-grace", "3600")
    await page.click("#rotate-confirm")
    await expect(page.locator("#new-key-title")).to_have_text("Key rotated.")
    await expect(page.locator("#new-key-note")).to_contain_text("The previous secret works until")
    new_secret = await page.locator("#new-key-value").text_content()
    assert new_secret and new_secret != rotating["key"]
    for secret in (new_secret, rotating["key"]):
        assert (await proxy.request("GET", "/api/v5/app/list", key=secret))[0] == 200
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "console-lifecycle.png"), full_page=True)

    # tokens: create one (shown once), see it listed without its secret, revoke it
    await page.click("#show-tokens")
    await expect(page.locator("#tokens")).to_be_visible()
    await page.fill("#token-name", "reader")
    await page.fill("#token-account", "acme")
    await page.check("#token-permissions input[value='keys:read']")
    await page.click("#token-create")
    await expect(page.locator("#new-token")).to_be_visible()
    token = await page.locator("#new-token-value").text_content()
    assert token
    listed = page.locator("#token-rows tr", has=page.locator(".token-name", has_text="reader"))
    await expect(listed).to_have_count(1)
    assert token not in await page.locator("#token-rows").inner_text()
    await page.screenshot(path=str(OUTPUT / "console-tokens.png"), full_page=True)

    # the scoped token sees its account only, and none of the controls it may not use
    await proxy.admin.create(name="Acme key", account="acme")
    reader = await open_console(browser, proxy)
    await sign_in(reader, token)
    await expect(row(reader, "Acme key")).to_have_count(1)
    await expect(reader.locator("#key-rows tr")).to_have_count(1)
    for hidden in ("#create-form", "#show-tokens"):
        await expect(reader.locator(hidden)).to_be_hidden()
    for control in ("button.reveal", "button.rotate", "button.delete", "button.copy-key"):
        await expect(reader.locator(f"#key-rows {control}")).to_have_count(0)
    await expect(reader.locator("#key-rows input[type=checkbox]")).to_be_disabled()
    await expect(reader.locator("#whoami")).to_contain_text("account acme")

    await listed.locator("button.revoke").click()
    await expect(listed).to_have_count(0)
    assert (await proxy.admin.call("GET", "/api/v1/keys", token=token))[0] == 401


async def test_rate_limits_in_the_details_panel(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    key = await proxy.admin.create(name="Limited")
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await row(page, "Limited").locator("button.details").click()
    await page.fill("#rate-requests", "2")
    await page.select_option("#rate-per", "second")
    await page.click("#rate-add")
    await expect(page.locator("#rate-list li")).to_have_count(1)
    await expect(page.locator("#rate-list li").first).to_contain_text("2 per second")
    await page.fill("#rate-requests", "0")
    await page.click("#rate-add")
    await expect(page.locator("#rate-error")).to_contain_text("rate_limits")
    statuses = [(await proxy.request("GET", "/api/v5/app/list", key=key["key"]))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    await page.locator("#rate-list li button").click()
    await expect(page.locator("#rate-list li")).to_have_count(0)
    shown = (await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}"))[1]
    assert shown["rate_limits"] == []
