"""The dashboard's session, CSRF guard and data routes over plain HTTP (the browser test drives the pages)."""

from __future__ import annotations

import re

import aiohttp
import gateway_client as gw
import pytest


async def log_in(net, key: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        async with session.post(net.api_url + "/dashboard/login", data={"admin_key": key},
                                allow_redirects=False) as response:
            await response.read()
            return response


async def dashboard_session(net) -> tuple[dict, str]:
    """(cookie header, CSRF token) of a fresh session."""
    response = await log_in(net, net.admin_key)
    token = response.cookies["gateway_session"].value
    headers = {"Cookie": f"gateway_session={token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(net.api_url + "/dashboard", headers=headers, allow_redirects=False) as page:
            assert page.status == 200
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text()).group(1)
    return headers, csrf


async def test_everything_needs_a_session(local_subnet):
    async with aiohttp.ClientSession() as session:
        async with session.get(local_subnet.api_url + "/dashboard", allow_redirects=False) as page:
            assert (page.status, page.headers["Location"]) == (303, "/dashboard/login")
    for path in ("/keys", "/logs", "/overview", "/miners"):
        answer = await gw.call("GET", local_subnet.api_url + "/dashboard/api" + path)
        assert answer.status == 401 and answer.body["error"]["code"] == "dashboard_login_required"
    forged = await gw.call("GET", local_subnet.api_url + "/dashboard/api/keys",
                           headers={"Cookie": "gateway_session=forged"})
    assert forged.status == 401


@pytest.mark.parametrize("wrong", ["", "admin-wrong"])
async def test_a_wrong_admin_key_opens_no_session(local_subnet, wrong):
    response = await log_in(local_subnet, wrong)
    assert response.status == 401 and "gateway_session" not in response.cookies


async def test_the_cookie_is_strict_and_changes_need_the_csrf_token(local_subnet):
    response = await log_in(local_subnet, local_subnet.admin_key)
    assert (response.status, response.headers["Location"]) == (303, "/dashboard")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/dashboard" in cookie
    assert local_subnet.admin_key not in cookie
    headers, csrf = await dashboard_session(local_subnet)
    url = local_subnet.api_url + "/dashboard/api/keys"

    refused = await gw.call("POST", url, headers=headers, json={"name": "csrf"})
    assert refused.status == 403 and refused.body["error"]["code"] == "csrf_failed"
    cross_site = await gw.call("POST", url, headers={**headers, "X-CSRF-Token": csrf,
                                                      "Origin": "http://evil.example"}, json={"name": "csrf"})
    assert cross_site.status == 403
    created = await gw.call("POST", url, headers={**headers, "X-CSRF-Token": csrf}, json={"name": "csrf", "credits": 3})
    assert created.status == 200 and created.body["api_key"].startswith("sk-sn-")
    assert created.headers["Cache-Control"] == "no-store"
    key_id = created.body["id"]
    bad = await gw.call("PATCH", f"{url}/{key_id}", headers={**headers, "X-CSRF-Token": csrf},
                        json={"rate_limits": "lots"})
    assert bad.status == 422 and "rate_limits" in bad.body["error"]["message"]
    changed = await gw.call("PATCH", f"{url}/{key_id}", headers={**headers, "X-CSRF-Token": csrf},
                            json={"add_credits": 2, "expires_at": "2031-01-01"})
    assert (changed.body["key"]["credits"], changed.body["key"]["expires_at"]) == (5, "2031-01-01T00:00:00Z")
    listed = await gw.call("GET", url, headers=headers)
    assert created.body["api_key"] not in str(listed.body)
    deleted = await gw.call("DELETE", f"{url}/{key_id}", headers={**headers, "X-CSRF-Token": csrf})
    assert deleted.status == 200
    gone = await gw.call("DELETE", f"{url}/{key_id}", headers={**headers, "X-CSRF-Token": csrf})
    assert gone.status == 404


async def test_overview_logs_and_miners_follow_the_traffic(local_subnet):
    created = await gw.admin(local_subnet, "POST", "/create-api-key/?name=overview")
    key, key_id = created.body["api_key"], created.body["id"]
    answers = [await gw.chat(local_subnet.api_url, key, max_tokens=5) for _ in range(4)]
    assert [a.status for a in answers] == [200] * 4
    assert (await gw.chat(local_subnet.api_url, key, messages=[])).status == 422
    headers, _ = await dashboard_session(local_subnet)
    base = local_subnet.api_url + "/dashboard/api"

    async def counted():
        answer = await gw.call("GET", f"{base}/overview?range=hour&key={key_id}", headers=headers)
        return answer.body if answer.body["totals"]["requests"] == 5 else None

    mine = await gw.eventually(counted, timeout=5)
    assert mine, "the roll-ups never counted the requests"
    totals = mine["totals"]
    assert (totals["ok"], totals["rejected"], totals["errors"], totals["success_rate"]) == (4, 1, 0, 1.0)
    assert totals["completion_tokens"] == 20 and len(mine["series"]) == 60
    everyone = (await gw.call("GET", f"{base}/overview?range=day", headers=headers)).body
    assert len(everyone["series"]) == 96 and everyone["totals"]["p50_ms"] > 0
    assert everyone["totals"]["p99_ms"] >= everyone["totals"]["p50_ms"]
    assert any(k["key_id"] == key_id and k["requests"] == 5 for k in everyone["top_keys"])

    logs = (await gw.call("GET", f"{base}/logs?key={key_id}&status=4xx", headers=headers)).body["logs"]
    assert [log["status"] for log in logs] == [422]
    one = (await gw.call("GET", f"{base}/logs/{answers[0].body['id']}", headers=headers)).body
    assert one["key"]["name"] == "overview" and one["miners"] and any(m["winner"] for m in one["miners"])
    assert (await gw.call("GET", f"{base}/logs/nope", headers=headers)).status == 404
    for query in (f"uid={10**30}", "uid=-1", "uid=65536"):  # a store's integer overflowed: a 500 before
        refused = await gw.call("GET", f"{base}/logs?{query}", headers=headers)
        assert refused.status == 422 and refused.body["error"]["message"], (query, refused.body)

    miners = (await gw.call("GET", f"{base}/miners", headers=headers)).body
    assert miners["validator"]["reachable"] and miners["directory"]["validator_reachable"]
    by_uid = {row["uid"]: row for row in miners["miners"]}
    good = local_subnet.member("miner", "good")
    assert by_uid[good.uid]["hotkey"] == good.hotkey and by_uid[good.uid]["available"]
    assert sum(row["recent"]["calls"] for row in by_uid.values()) >= 4
