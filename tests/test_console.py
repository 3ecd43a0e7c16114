"""The admin console end to end, in real headless Chromium driven by Playwright.

Screenshots go to test-output/: the list at 1366 px, the details panel, the create form, a
narrow screen, and the page in Chinese."""

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


AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"


async def open_editor_for(page: Page, name: str) -> None:
    await row(page, name).locator("button.details").click()
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-title")).to_have_text(name)


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

    # create, with every rule set in the form: nothing is left open by accident
    await page.click("#new-key-button")
    await expect(page.locator("#detail-title")).to_have_text("New key")
    await page.fill("#f-name", "Orders sync")
    await page.fill("#f-account", "acme")
    await page.check("input[name=apps-mode][value=list]")
    for app in ("A1", "A2"):
        await page.fill("#app-input", app)
        await page.press("#app-input", "Enter")
    await page.click("#app-list li:has-text('A2') button")
    await page.check("#catalogue input[value=data]")
    await page.check("#catalogue input[value='workflow.approval_comments']")
    await page.fill("#ip-input", "127.0.0.*")
    await page.click("#ip-add")
    await page.fill("#f-expires", "2099-01-02T03:04")
    await page.fill("#rate-requests", "50")
    await page.select_option("#rate-per", "second")
    await page.click("#rate-add")
    await page.locator("#detail").evaluate("panel => { panel.scrollTop = 0; }")
    await page.screenshot(path=OUTPUT / "console-create.png")
    await page.click("#save")
    await expect(page.locator("#new-key")).to_be_visible()
    await expect(page.locator("#detail")).to_be_hidden()
    secret = await page.locator("#new-key-value").text_content()
    assert secret and len(secret) == 32
    orders = row(page, "Orders sync")
    await expect(orders).to_have_count(1)
    await expect(page.locator("#usage span[data-account=acme]")).to_have_text("acme: 1 / 500 keys")
    await expect(page.locator("#account-suggestions option[value=acme]")).to_have_count(1)  # offered next time
    key_id = await orders.get_attribute("data-id")
    _, stored = await proxy.admin.call("GET", f"/api/v1/keys/{key_id}")
    assert stored["account"] == "acme" and stored["apps"] == ["A1"]
    assert stored["interfaces"] == ["data", "workflow.approval_comments"]
    assert stored["ip_whitelist"] == ["127.0.0.*"] and stored["rate_limits"] == [{"requests": 50, "per": "second"}]
    assert stored["expires_at"].startswith("2099-01-0")
    await expect(orders.locator("td.colApps")).to_have_text("A1")
    await expect(orders.locator("td.colInterfaces")).to_have_text("Data, Get approval comments")

    # reveal with the eye, then hide; copy the value
    masked = f"{secret[:4]}****{secret[-4:]}"
    await expect(orders.locator(".secret")).to_have_text(masked)
    await orders.locator("button.reveal").click()
    await expect(orders.locator(".secret")).to_have_text(secret)
    await expect(orders.locator("button.reveal")).to_have_attribute("aria-pressed", "true")
    await orders.locator("button.reveal").click()
    await expect(orders.locator(".secret")).to_have_text(masked)
    await orders.locator("button.copy-value").click()
    await expect(page.locator("#notice")).to_have_text("Key copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    # the details panel: one Save for everything; a bad whitelist entry is named by the API
    # and marked in the list; nothing is stored until the form is valid
    await open_editor_for(page, "Orders sync")
    await expect(page.locator("#save")).to_be_disabled()  # nothing changed yet
    await expect(page.locator("#u-count")).to_have_text("0")
    await page.fill("#f-name", "Orders v2")
    await page.fill("#ip-input", "2001:db8::1")
    await page.click("#ip-add")
    await page.click("#save")
    await expect(page.locator("#ip-error")).to_contain_text("IPv6")
    await expect(page.locator("#ip-list li.invalid")).to_have_text("2001:db8::1\u00d7")
    assert (await proxy.admin.call("GET", f"/api/v1/keys/{key_id}"))[1]["name"] == "Orders sync"
    await page.click("#ip-list li.invalid button")
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Changes saved.")
    await expect(page.locator("#detail-title")).to_have_text("Orders v2")
    orders = row(page, "Orders v2")
    await expect(orders).to_have_count(1)
    await expect(page.locator("#history-list li").first).to_contain_text("updated")
    await expect(page.locator("#history-list li").first).to_contain_text("name")
    await expect(page.locator("#history-list li").last).to_contain_text("created")
    await page.screenshot(path=OUTPUT / "console-detail.png")

    # closing with unsaved changes asks first: keep editing, then discard
    await page.fill("#f-name", "Not saved")
    await page.click("#detail-close")
    await expect(page.locator("#confirm-discard")).to_be_visible()
    await page.click("#discard-keep")
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#f-name")).to_have_value("Not saved")
    await page.click("#detail-close")
    await page.click("#discard-confirm")
    await expect(page.locator("#detail")).to_be_hidden()
    assert (await proxy.admin.call("GET", f"/api/v1/keys/{key_id}"))[1]["name"] == "Orders v2"

    # the proxy honours the key; the status switch turns it off at once
    status, _ = await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=secret)
    assert status == 200
    switch = orders.locator("button.switch")
    await switch.click()
    await expect(switch).to_have_attribute("aria-checked", "false")
    await expect(orders.locator(".status")).to_have_text("Disabled")
    status, body = await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=secret)
    assert (status, body["reason"]) == (403, "key_disabled")
    await switch.click()
    await expect(switch).to_have_attribute("aria-checked", "true")

    # duplicate (a new live key) only after a confirmation
    await orders.locator("button.duplicate").click()
    await expect(page.locator("#confirm-duplicate")).to_be_visible()
    await page.click("#confirm-duplicate button[value=cancel]")
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    await orders.locator("button.duplicate").click()
    await page.click("#duplicate-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(2)
    copied = await page.locator("#new-key-value").text_content()
    assert copied and copied != secret
    await expect(page.locator("#usage span[data-account=acme]")).to_have_text("acme: 2 / 500 keys")
    await page.reload()  # the token survives a reload of the tab
    await expect(page.locator("#key-rows tr")).to_have_count(2)
    await page.screenshot(path=OUTPUT / "console-list.png", full_page=True)

    # delete from the panel, with a confirmation that shows the last use and warns
    await row(page, "Orders v2").first.locator("button.details").click()
    await page.click("#detail-delete")
    dialog = page.locator("#confirm-delete")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#delete-last-used")).not_to_have_text("Never")
    await expect(dialog).to_contain_text("Make sure no client still uses this key")
    await page.click("#delete-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    await expect(page.locator("#detail")).to_be_hidden()
    statuses = {(await proxy.json("POST", "/api/v1/app/A1/entry/e1/data_create", key=s))[0] for s in (secret, copied)}
    assert statuses == {401, 200}

    # a narrow screen gets cards instead of a table
    narrow = await open_console(browser, proxy, width=390, height=844)
    await sign_in(narrow, proxy.admin.token)  # a new tab: sessionStorage starts empty
    await expect(narrow.locator("#key-rows tr")).to_have_count(1)
    await narrow.screenshot(path=OUTPUT / "console-narrow.png", full_page=True)
    assert await narrow.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await narrow.context.close()

    # sign out forgets the token
    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('gateway-admin-token')") is None


async def test_the_editor_follows_changes_made_elsewhere_and_keeps_unsaved_edits(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    key = await proxy.admin.create(name="Shared")
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await open_editor_for(page, "Shared")
    await page.fill("#f-name", "Renamed")  # not saved yet
    await row(page, "Shared").locator("button.switch").click()  # the row's switch: applies at once
    await expect(page.locator("#f-enabled")).to_have_attribute("aria-checked", "false")
    await expect(page.locator("#f-name")).to_have_value("Renamed")
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Changes saved.")
    _, stored = await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert (stored["name"], stored["enabled"]) == ("Renamed", False)  # the save did not undo the switch


async def test_escape_on_a_confirmation_is_a_no_even_after_a_yes(start_proxy, browser: Browser) -> None:
    """A dialog keeps its last answer: pressing Escape on the next one must not repeat it."""
    proxy: Proxy = await start_proxy()
    for name in ("First", "Second"):
        await proxy.admin.create(name=name)
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await row(page, "First").locator("button.delete").click()
    await page.click("#delete-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    await row(page, "Second").locator("button.delete").click()
    await expect(page.locator("#confirm-delete")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm-delete")).to_be_hidden()
    await page.wait_for_timeout(300)
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    assert len((await proxy.admin.call("GET", "/api/v1/keys"))[1]["items"]) == 1
    # the same for Duplicate
    await row(page, "Second").locator("button.duplicate").click()
    await page.click("#duplicate-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(2)
    await row(page, "Second").first.locator("button.duplicate").click()
    await page.keyboard.press("Escape")
    await page.wait_for_timeout(300)
    await expect(page.locator("#key-rows tr")).to_have_count(2)


async def test_the_new_key_banner_goes_with_its_key(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await page.click("#new-key-button")
    await page.fill("#f-name", "Short lived")
    await page.click("#save")
    await expect(page.locator("#new-key")).to_be_visible()
    await row(page, "Short lived").locator("button.delete").click()
    await page.click("#delete-confirm")
    await expect(page.locator("#key-rows tr")).to_have_count(0)
    await expect(page.locator("#new-key")).to_be_hidden()
    assert await page.locator("#new-key-value").text_content() == ""


async def test_paging_search_and_filters(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    made = []
    for i in range(112):
        account = "acme" if i % 2 else "beta"
        made.append(await proxy.admin.create(name=f"Key {i:03d}", account=account, enabled=i % 7 != 0))
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    rows = page.locator("#key-rows tr")
    await expect(rows).to_have_count(50)
    await expect(page.locator("#page-info")).to_have_text("Page 1 · 50 on this page")
    await expect(page.locator("#page-prev")).to_be_disabled()
    seen = set(await rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)"))
    await page.click("#page-next")
    await expect(page.locator("#page-info")).to_have_text("Page 2 · 50 on this page")
    seen |= set(await rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)"))
    await page.click("#page-next")
    await expect(rows).to_have_count(12)
    await expect(page.locator("#page-next")).to_be_disabled()
    seen |= set(await rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)"))
    assert seen == {key["id"] for key in made}  # every key once, across the pages
    await page.click("#page-prev")
    await expect(page.locator("#page-info")).to_have_text("Page 2 · 50 on this page")

    # search: by name, by id, by masked key
    await page.fill("#search", "key 10")
    await expect(rows).to_have_count(10)  # Key 100 .. Key 109
    await expect(page.locator("#page-info")).to_have_text("Page 1 · 10 on this page")
    target = made[42]
    await page.fill("#search", target["id"])
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("span.name")).to_have_text("Key 042")
    await page.fill("#search", target["key_masked"])
    await expect(rows.first).to_have_attribute("data-id", target["id"])
    await page.fill("#search", "no such key")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#empty")).to_have_text("No key matches.")

    # filters: account, status, and both with a search
    await page.fill("#search", "")
    await page.select_option("#filter-account", "acme")
    await page.select_option("#filter-status", "disabled")
    expected = [k for k in made if k["account"] == "acme" and not k["enabled"]]
    await expect(rows).to_have_count(len(expected))
    assert set(await rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)")) == {k["id"] for k in expected}
    await page.select_option("#filter-status", "enabled")
    await page.fill("#search", "Key 00")
    await expect(rows).to_have_count(len([k for k in made[:10] if k["account"] == "acme" and k["enabled"]]))
    status, body = await proxy.admin.call("GET", "/api/v1/keys?status=maybe")
    assert (status, body["error"]["field"]) == (422, "status")


async def test_interfaces_by_name_with_tri_state_categories_in_chinese(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    key = await proxy.admin.create(name="Scoped", interfaces=["data.list", "data.get", "workflow.task_approve"])
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await open_editor_for(page, "Scoped")
    data = page.locator("#catalogue input[value=data]")
    assert await data.evaluate("box => box.indeterminate && !box.checked")
    await expect(page.locator("#catalogue label:has(input[value='data.list'])")).to_contain_text("List records")
    await expect(page.locator("#iface-extra li")).to_have_text(
        ["workflow.task_approve\u00d7"]
    )  # kept, not in the catalogue
    await data.check()  # the whole category
    assert await data.evaluate("box => !box.indeterminate && box.checked")
    await page.uncheck("#catalogue input[value='data.delete']")  # one out: the others, by id
    assert await data.evaluate("box => box.indeterminate")
    await page.check("#catalogue input[value='data.delete']")  # all of them: the category again
    assert await data.evaluate("box => box.checked")
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Changes saved.")
    _, stored = await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert sorted(stored["interfaces"]) == ["data", "workflow.task_approve"]

    # 简体中文: every word of the page switches, and the choice is remembered
    await page.select_option("#lang", "zh")
    await expect(page.locator("h1")).to_have_text("API 密钥")
    await expect(page.locator("#catalogue label:has(input[value='data.list'])")).to_contain_text("查询多条数据")
    await expect(page.locator("#save")).to_have_text("保存更改")
    await page.click("#detail-close")
    await expect(page.locator("#new-key-button")).to_have_text("新建密钥")
    await page.reload()
    await expect(page.locator("#key-rows tr")).to_have_count(1)
    await expect(page.locator("th").first).to_have_text("名称")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=OUTPUT / "console-chinese.png", full_page=True)
    await page.select_option("#lang", "en")
    await expect(page.locator("h1")).to_have_text("API keys")


async def test_no_sideways_scroll_no_favicon_401_and_no_serious_accessibility_violations(
    start_proxy, browser: Browser
) -> None:
    proxy: Proxy = await start_proxy()
    status, _ = await proxy.admin.call("GET", "/favicon.ico", token="")
    assert status == 200
    for i in range(3):
        await proxy.admin.create(
            name=f"A rather long key name number {i}", account="some-account", apps=["app1", "app2"]
        )
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)
    page = await context.new_page()
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    await page.goto(proxy.admin.url + "/")
    await sign_in(page, proxy.admin.token)
    for shown in (1, 2, 3):  # each reveal redraws the list: click the next hidden one
        await page.locator("#key-rows button.reveal[aria-pressed=false]").first.click()
        await expect(page.locator("#key-rows button.reveal[aria-pressed=true]")).to_have_count(shown)
    for width in (1440, 1366, 1024):
        await page.set_viewport_size({"width": width, "height": 900})
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth"), width
    assert not failed, failed

    axe = AXE.read_text()

    async def serious(where: str) -> list[str]:
        await page.add_script_tag(content=axe)
        result = await page.evaluate(
            "async () => { const r = await axe.run(document); return [r.passes.length, r.violations]; }"
        )
        passes, found = result
        assert passes > 10, where  # axe ran its rules on this page
        return [
            f"{where}: {v['id']} ({v['impact']}): {v['help']}" for v in found if v["impact"] in ("serious", "critical")
        ]

    problems = await serious("list")
    await page.click("#new-key-button")
    problems += await serious("create form")
    await page.click("#cancel")
    await row(page, "A rather long key name number 0").locator("button.details").click()
    problems += await serious("details")
    await page.click("#detail-close")
    await page.click("#key-rows button.delete >> nth=0")
    problems += await serious("delete dialog")
    await page.click("#confirm-delete button[value=cancel]")
    await page.click("#show-tokens")
    problems += await serious("tokens")
    await page.click("#tokens-close")
    await page.select_option("#lang", "zh")
    problems += await serious("list in Chinese")
    await page.click("#sign-out")
    problems += await serious("sign in")
    assert not problems, problems
    await context.close()


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
    await expect(page.locator("#expiry-warning")).to_have_text("1 key(s) on this page expire within a week.")
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
    for hidden in ("#new-key-button", "#show-tokens"):
        await expect(reader.locator(hidden)).to_be_hidden()
    for control in ("button.reveal", "button.rotate", "button.delete", "button.duplicate"):
        await expect(reader.locator(f"#key-rows {control}")).to_have_count(0)
    await expect(reader.locator("#key-rows button.switch")).to_be_disabled()
    await row(reader, "Acme key").locator("button.details").click()
    await expect(reader.locator("#save")).to_be_hidden()
    await expect(reader.locator("#f-name")).to_be_disabled()
    await expect(reader.locator("#whoami")).to_contain_text("account acme")

    await listed.locator("button.revoke").click()
    await expect(listed).to_have_count(0)
    assert (await proxy.admin.call("GET", "/api/v1/keys", token=token))[0] == 401


async def test_rate_limits_in_the_details_panel(start_proxy, browser: Browser) -> None:
    proxy: Proxy = await start_proxy()
    key = await proxy.admin.create(name="Limited")
    page = await open_console(browser, proxy)
    await sign_in(page, proxy.admin.token)
    await open_editor_for(page, "Limited")
    await page.fill("#rate-requests", "0")
    await page.click("#rate-add")
    await page.click("#save")
    await expect(page.locator("#rate-error")).to_contain_text("rate_limits")
    await page.click("#rate-list li button")
    await page.fill("#rate-requests", "2")
    await page.select_option("#rate-per", "second")
    await page.click("#rate-add")
    await expect(page.locator("#rate-list li")).to_have_count(1)
    await expect(page.locator("#rate-list li").first).to_contain_text("2 per second")
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Changes saved.")
    statuses = [(await proxy.request("GET", "/api/v5/app/list", key=key["key"]))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    await page.locator("#rate-list li button").click()
    await expect(page.locator("#rate-list li")).to_have_count(0)
    await page.click("#save")
    await expect(page.locator("#notice")).to_have_text("Changes saved.")
    shown = (await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}"))[1]
    assert shown["rate_limits"] == []
    await expect(page.locator("#u-count")).to_have_text("2")
