"""The dashboard at /, in Debian's headless Chromium (driven through Debian's chromium-driver), against the
real stack with a simulated fleet and with the network beyond this machine cut off: every library comes
from the API itself. Screenshots go to .citysense/screenshots/."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from simulators import run as sim
from simulators.fleet import build_fleet, write_fleet
from tests.helpers import REPO, Service, service_env, unique, wait_until

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

SHOTS = REPO / ".citysense" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: What the colours must be, from the published scales (not from the dashboard's code).
EPA_AQI = {"Good": "#00E400", "Moderate": "#FFFF00", "Unhealthy for Sensitive Groups": "#FF7E00",
           "Unhealthy": "#FF0000", "Very Unhealthy": "#8F3F97", "Hazardous": "#7E0023"}
NO_DATA = "#D1D5DB"


@pytest.fixture(scope="module")
def city(workdir, dsn, broker, ingestor, api, tmp_path_factory):
    """An API with a short refresh, a simulated fleet with a day of history, and one silent device."""
    env = service_env(dsn, broker, CITYSENSE_DASHBOARD_REFRESH_S=3, CITYSENSE_API_CACHE_S=30)
    svc = Service("api", env, workdir / "api-dashboard.log").start()
    svc.base_url = f"http://127.0.0.1:{env['CITYSENSE_API_PORT']}"
    wait_until(lambda: _ok(svc.base_url + "/readyz"), 30, what="the dashboard's API")
    tmp = tmp_path_factory.mktemp("dash")
    fleet = tmp / "fleet.json"
    write_fleet(build_fleet(40, 11, prefix=unique("d")), fleet)
    from services.core.settings import Settings
    s = Settings(mqtt_url=f"mqtts://127.0.0.1:{broker.tls_port}", mqtt_ca_file=broker.ca.ca_file, sim_api_url=api.base_url,
                 admin_token=api.token, sim_credentials_file=tmp / "creds.json", sim_devices=40, sim_seed=11)
    assert sim.run(s, duration_s=2, backfill_s=26 * 3600, fleet_file=fleet, stop=threading.Event()) == 0
    silent = unique("quiet")
    r = httpx.post(api.base_url + "/v1/devices", headers={"Authorization": f"Bearer {api.token}"},
                   json={"device_id": silent, "kind": "noise", "latitude": 39.2904, "longitude": -76.6122, "interval_s": 60})
    assert r.status_code == 201
    ids = [d["device_id"] for d in json.loads(fleet.read_text())["devices"]]
    wait_until(lambda: httpx.get(svc.base_url + "/v1/qol/summary").json()["items"], 30)
    svc.silent, svc.fleet = silent, ids
    yield svc
    svc.stop()


def _ok(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or not Path(DRIVER).exists():
        pytest.fail("Chromium and chromium-driver are needed (deploy/local/install.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                # the network beyond this machine is cut off: anything not served by the API fails to load
                "--proxy-server=http://127.0.0.1:9", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_dashboard(driver, city):
    driver.get(city.base_url + "/")
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "path[data-csa]")) == 55, 20, what="55 CSAs drawn")


def text(driver, element_id: str) -> str:
    """An element's text, read in the page (the dashboard replaces its panels as it updates them)."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : ''", element_id)


def drawn_with_summary(driver) -> tuple[dict[str, str], dict[str, dict]]:
    """The fill of every area and the API's summary the page drew them from, read at one moment (the page
    refreshes every few seconds here)."""
    fill, rows = driver.execute_script("""
        const o = {}; for (const p of document.querySelectorAll('path[data-csa]')) o[p.dataset.csa] = p.getAttribute('fill');
        return [o, window.citysense.summary.features.map(f => f.properties)];""")
    return fill, {r["csa"]: r for r in rows}


def test_the_map_draws_every_csa_in_the_colours_the_api_implies(browser, city):
    # what the page drew from is the API's answer: the same as the API gives a moment later (but for an
    # hour that turned, or the answer cache renewing between the two: then look again)
    for _ in range(3):
        open_dashboard(browser, city)
        drawn, summary = drawn_with_summary(browser)
        api = {r["csa"]: r for r in httpx.get(city.base_url + "/v1/qol/summary").json()["items"]}
        if {c: r["aqi"] for c, r in summary.items()} == {c: r["aqi"] for c, r in api.items()}:
            break
        time.sleep(2)
    else:
        raise AssertionError("the page's areas never matched the API's summary")
    assert set(drawn) == set(summary) and len(drawn) == 55
    for csa, row in summary.items():
        want = EPA_AQI[row["aqi_category"]] if row["aqi"] is not None else NO_DATA
        assert drawn[csa].upper() == want, (csa, row["aqi"], row["aqi_category"], drawn[csa])
    assert any(r["aqi"] is not None for r in summary.values()) and any(r["aqi"] is None for r in summary.values())
    # the legend says each category in words, "No data" included, with how many areas are in it
    legend = browser.find_element(By.ID, "legend").text
    assert "Good" in legend and "Hazardous" in legend and "No data" in legend
    # an area without data is drawn as such (dashed, pale), never as "Good"
    none = next(c for c, r in summary.items() if r["aqi"] is None)
    path = browser.find_element(By.CSS_SELECTOR, f'path[data-csa="{none}"]')
    assert path.get_attribute("stroke-dasharray") and "no data" in path.get_attribute("aria-label")
    browser.save_screenshot(str(SHOTS / "dashboard-map.png"))
    # the heat index colours the map as NWS's categories
    browser.find_element(By.CSS_SELECTOR, 'input[value="heat"]').click()
    heat = {"Caution": "#FFFF66", "Extreme Caution": "#FFCC00", "Danger": "#FF8C00", "Extreme Danger": "#D7301F"}
    drawn, summary = drawn_with_summary(browser)
    for csa, row in summary.items():
        want = NO_DATA if row["heat_index_f"] is None else heat.get(row["heat_index_category"], "#C6E9C0")
        assert drawn[csa].upper() == want.upper(), (csa, row["heat_index_f"], drawn[csa])
    assert "Heat index" in browser.find_element(By.ID, "legend").text
    assert errors(browser) == []


def test_a_click_on_a_csa_shows_its_panel_and_charts(browser, city):
    open_dashboard(browser, city)
    summary = httpx.get(city.base_url + "/v1/qol/summary").json()["items"]
    csa = max((r for r in summary if r["aqi"] is not None), key=lambda r: r["devices"])["csa"]
    path = browser.find_element(By.CSS_SELECTOR, f'path[data-csa="{csa}"]')
    webdriver.ActionChains(browser).move_to_element(path).click().perform()
    wait_until(lambda: text(browser, "panel-title") == csa, 10, what="the panel of " + csa)
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#panel .chart[data-points]")) == 2, 20,
               what="both charts")
    points = [int(c.get_attribute("data-points")) for c in browser.find_elements(By.CSS_SELECTOR, "#panel .chart")]
    assert points[0] >= 20 and points[1] >= 24, points  # a day of hours, and the week's (the fleet has 26 h)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#panel .chart canvas")) == 2
    aqi = httpx.get(city.base_url + "/v1/qol/aqi", params={"csa": csa}).json()
    panel = browser.find_element(By.ID, "panel").text
    assert str(aqi["aqi"]) in panel and aqi["category"] in panel and "NowCast" in panel
    assert "Heat index" in panel and "Noise today" in panel
    link = browser.find_element(By.PARTIAL_LINK_TEXT, "readings of the last 7 days (CSV)").get_attribute("href")
    r = httpx.get(link)
    assert r.status_code == 200 and r.text.startswith("time,") and len(r.text.splitlines()) > 1
    browser.save_screenshot(str(SHOTS / "dashboard-panel.png"))
    assert errors(browser) == []


def test_the_freshness_view_lists_a_silent_device(browser, city):
    open_dashboard(browser, city)
    wait_until(lambda: city.silent in text(browser, "freshness"), 15, what="the silent device listed")
    cell = browser.find_element(By.XPATH, f'//td[contains(@data-silent, "{city.silent}")]')
    assert "silent" in cell.get_attribute("class")


def test_it_refreshes_itself_and_says_how_old_its_data_is(browser, city):
    open_dashboard(browser, city)
    wait_until(lambda: "Data as of" in text(browser, "status"), 10)
    loads = browser.execute_script("return performance.getEntriesByType('resource')"
                                   ".filter(e => e.name.includes('/v1/qol/summary')).length")
    wait_until(lambda: browser.execute_script("return performance.getEntriesByType('resource')"
                                              ".filter(e => e.name.includes('/v1/qol/summary')).length") > loads,
               15, what="a refresh of the summary")
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload


def test_keyboard_reaches_every_control(browser, city):
    open_dashboard(browser, city)
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#download-list a"), 10)
    # every control a visitor can use, numbered; radio buttons of one group are one tab stop (the arrow
    # keys move within it), so the group counts once
    controls = browser.execute_script("""
        const all = [...document.querySelectorAll('a[href], input, select, button, [tabindex="0"], path[data-csa]')]
          .filter(e => (e.offsetParent !== null || e.classList.contains('skip')) && !e.disabled)
          .filter(e => !(e.name === 'indicator' && !e.checked));
        all.forEach((e, i) => e.setAttribute('data-kb', i));
        return all.map(e => e.outerHTML.slice(0, 100));""")
    browser.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    seen = set()
    for _ in range(len(controls) + 10):
        webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
        k = browser.execute_script("return document.activeElement.getAttribute('data-kb')")
        if k is not None:
            seen.add(int(k))
    missing = [c for i, c in enumerate(controls) if i not in seen]
    assert not missing, missing
    assert len(controls) > 15 + 55  # links, the indicator, the area list, the map, its zoom buttons and 55 areas
    # an area on the map is chosen with Enter, as a button
    browser.execute_script("document.querySelector('path[data-csa]').focus()")
    first = browser.execute_script("return document.activeElement.dataset.csa")
    webdriver.ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(lambda: text(browser, "panel-title") == first, 10, what="Enter on an area")
    # and a CSA can be chosen without a mouse
    select = browser.find_element(By.ID, "csa-select")
    select.send_keys(Keys.ARROW_DOWN)
    wait_until(lambda: text(browser, "panel-title") not in ("", "Choose an area"), 10)


def test_phone_sized_and_at_200_percent_nothing_is_cut_off(browser, city):
    try:
        for width, height, scale in ((390, 844, 3), (640, 450, 2)):  # a phone; a 1280×900 screen at 200 %
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": width < 500})
            open_dashboard(browser, city)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (width, overflow)
            assert browser.find_element(By.ID, "map").size["width"] >= 0.85 * width
        browser.save_screenshot(str(SHOTS / "dashboard-zoomed.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_page_weight_and_first_render(browser, city):
    open_dashboard(browser, city)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", 10)
    weight = browser.execute_script("""
        const n = performance.getEntriesByType('navigation')[0];
        return performance.getEntriesByType('resource').reduce((s, e) => s + e.transferSize, n.transferSize);""")
    rendered = browser.execute_script("return window.citysenseRendered")
    origins = browser.execute_script("return [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    print(f"\ndashboard: {weight / 1024:.0f} KiB transferred, map drawn {rendered:.0f} ms after navigation start")
    (SHOTS / "dashboard-weight.json").write_text(json.dumps({"bytes": weight, "render_ms": rendered,
                                                             "at": datetime.now(timezone.utc).isoformat()}))
    assert weight < 1_000_000
    assert origins == [city.base_url]  # nothing from elsewhere


def test_the_api_documentation_works_without_internet(browser, city):
    browser.get(city.base_url + "/docs")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), 20, what="Swagger UI")
    assert "citysense" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"), 10)
    origins = browser.execute_script("return [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert origins == [city.base_url]
    assert errors(browser) == []



