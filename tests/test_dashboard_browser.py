"""The operator dashboard in a real headless Chromium: Debian's ``/usr/bin/chromium``, driven by Selenium
through Debian's ``/usr/bin/chromedriver`` (nothing is downloaded; ``.ci/run`` installs both when missing).
Without them the tests are skipped, saying so; in CI (``CI=true``) they fail.

Against the session's local subnet: a wrong admin key is refused; the right one logs in; a key created on
the keys page is shown once; a request made with it appears in the request logs, and opening it shows every
miner it queried; the miners page lists the subnet's miners with the validator's scores; disabling and
deleting the key from the page take effect at once. A screenshot of each page goes to the test's tmp folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from services import in_ci

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")  # elsewhere than Debian's: point these at yours
CHROMEDRIVER = os.environ.get("TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1440,1000"]
WAIT = 15.0


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (see .ci/run)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the browser test is required)", pytrace=False)
        pytest.skip(reason)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = WAIT):
    """Until ``condition`` is truthy; the pages re-render their tables, so an element may go stale meanwhile."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)


def screenshot(driver, folder: Path, name: str) -> None:
    """The whole page, below the fold too (Chromium's DevTools protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    (folder / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def log_in(driver, net) -> None:
    driver.get(net.api_url + "/dashboard/login")
    driver.find_element(By.ID, "admin_key").send_keys(net.admin_key)
    driver.find_element(By.ID, "login-button").click()
    wait(driver, lambda d: d.get_cookie("gateway_session"))


def go(driver, net, fragment: str) -> None:
    """Open a page of the dashboard, logging in first when this browser has no session (tests run alone too)."""
    if driver.get_cookie("gateway_session") is None:
        log_in(driver, net)
    driver.get(f"{net.api_url}/dashboard#/{fragment}")


def chat(net, key: str) -> tuple[int, dict]:
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hello dashboard"}],
                       "max_tokens": 4}).encode()
    request = urllib.request.Request(net.api_url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_wrong_admin_key_is_refused(browser, local_subnet, shots):
    browser.get(local_subnet.api_url + "/dashboard")
    wait(browser, lambda d: d.current_url.endswith("/dashboard/login"))
    browser.find_element(By.ID, "admin_key").send_keys("admin-wrong")
    browser.find_element(By.ID, "login-button").click()
    # the error is read inside the wait: the page may re-render the element between finding and reading it
    shown = wait(browser, lambda d: d.find_element(By.ID, "login-error").text or None)
    assert shown == "Invalid admin key"
    assert browser.get_cookie("gateway_session") is None
    assert "admin-wrong" not in browser.current_url
    screenshot(browser, shots, "0-login-refused")


def test_login_shows_the_overview(browser, local_subnet, shots):
    browser.delete_all_cookies()
    log_in(browser, local_subnet)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".kpi")) >= 6)
    assert local_subnet.admin_key not in browser.current_url
    cookie = browser.get_cookie("gateway_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".chart svg")) == 4
    assert "Top keys" in browser.find_element(By.ID, "top-keys").text
    assert "quality vs best" in browser.find_element(By.ID, "routing").text.lower()  # whose answers clients got
    screenshot(browser, shots, "1-overview")


def test_a_key_created_in_the_browser_is_shown_once_and_its_request_is_logged(browser, local_subnet, shots):
    go(browser, local_subnet, "keys")
    name = wait(browser, lambda d: d.find_element(By.ID, "new-name"))
    name.send_keys("browser-made")
    browser.find_element(By.ID, "new-credits").send_keys("5")
    browser.find_element(By.ID, "create-button").click()
    key = wait(browser, lambda d: d.find_element(By.ID, "new-key").text)
    assert key.startswith("sk-sn-")
    row = wait(browser, lambda d: d.find_element(By.XPATH, "//tr[td//a[text()='browser-made']]"))
    key_id = row.get_attribute("data-key-id")
    screenshot(browser, shots, "2-keys-created")
    browser.refresh()
    wait(browser, lambda d: d.find_elements(By.XPATH, "//tr[td//a[text()='browser-made']]"))
    assert key not in browser.page_source and key[-12:] not in browser.page_source  # shown once, never again

    status, answer = chat(local_subnet, key)
    assert status == 200, answer
    go(browser, local_subnet, f"logs?key={key_id}")
    selector = f"tr[data-log-id='{answer['id']}']"

    def logged(driver):
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        if not found:
            driver.find_element(By.ID, "refresh-logs").click()
        return found

    wait(browser, logged)
    screenshot(browser, shots, "3-logs")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)
    miners = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#log-miners tbody tr[data-uid]"))
    assert len(miners) >= 1
    assert any("answered" in row.text for row in miners)
    assert str(answer["miner_uid"]) in {row.get_attribute("data-uid") for row in miners}
    screenshot(browser, shots, "4-log-detail")

    go(browser, local_subnet, f"keys/{key_id}")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chart svg"))
    screenshot(browser, shots, "5-key-usage")


def test_the_miners_page_lists_the_subnet_and_the_validators_scores(browser, local_subnet, shots):
    go(browser, local_subnet, "miners")
    miners = [m for m in local_subnet.members if m.role == "miner"]
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#miners-table tbody tr[data-uid]"))
    by_uid = {row.get_attribute("data-uid"): row for row in rows}
    for miner in miners:
        row = by_uid[str(miner.uid)]
        assert row.find_element(By.CSS_SELECTOR, "td[title]").get_attribute("title") == miner.hotkey
        assert miner.axon in row.text and "available" in row.text
    assert not browser.find_elements(By.ID, "validator-unreachable")
    assert browser.find_element(By.ID, "weights")
    screenshot(browser, shots, "6-miners")


def test_disable_and_delete_from_the_keys_page_take_effect_at_once(browser, local_subnet, shots):
    go(browser, local_subnet, "keys")
    wait(browser, lambda d: d.find_element(By.ID, "new-name")).send_keys("short-lived")
    browser.find_element(By.ID, "create-button").click()
    key = wait(browser, lambda d: d.find_element(By.ID, "new-key").text)
    xpath = "//tr[td//a[text()='short-lived']]"
    wait(browser, lambda d: d.find_element(By.XPATH, xpath))
    assert chat(local_subnet, key)[0] == 200

    wait(browser, lambda d: d.find_element(By.XPATH, xpath).find_element(By.CSS_SELECTOR, "button.toggle")).click()
    wait(browser, lambda d: "disabled" in d.find_element(By.XPATH, xpath).text)
    assert chat(local_subnet, key) == (401, {"error": {"message": "this API key is disabled", "type":
                                                       "authentication_error", "code": "disabled_api_key"}})
    wait(browser, lambda d: d.find_element(By.XPATH, xpath).find_element(By.CSS_SELECTOR, "button.delete")).click()
    wait(browser, lambda d: d.find_element(By.ID, "confirm-yes")).click()
    wait(browser, lambda d: not d.find_elements(By.XPATH, xpath))
    assert chat(local_subnet, key)[0] == 401


def test_logout_ends_the_session(browser, local_subnet):
    go(browser, local_subnet, "overview")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".kpi"))
    token = browser.get_cookie("gateway_session")["value"]
    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: d.current_url.endswith("/dashboard/login"))
    request = urllib.request.Request(local_subnet.api_url + "/dashboard/api/keys",
                                     headers={"Cookie": f"gateway_session={token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
