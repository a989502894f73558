"""The hub's pages in headless Chromium (issue 11): publish a repository, search it,
open the version, diff and lineage pages, download a version.

Uses Debian's chromium and chromedriver through selenium; skipped, saying why,
when any of them is missing (`make test` installs them where it can). Each page
is saved as a screenshot; with PAS_HUB_SCREENSHOTS=DIR they are also copied to
DIR (docs/hub holds the committed ones)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'pas[dev]')")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from pas import formats  # noqa: E402
from pas.hub import sample  # noqa: E402
from pas.hub.config import parse_config  # noqa: E402
from pas.hub.remote import publish  # noqa: E402
from pas.repo import Repository  # noqa: E402

TOKEN = "browser-test-token-0123"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubweb")
    ids = sample.build(root / "local")
    Repository.init(root / "hub").close()
    cfg = parse_config({"users": {"alice": {"token": TOKEN}},
                        "repos": {"zoo": {"path": str(root / "hub"), "owners": ["alice"]}}})
    with sample.Server(cfg) as url:
        # Publish the repository to the hub, as a user would, before browsing it.
        with Repository.open(root / "local") as local:
            rep = publish(local, f"{url}/zoo", ["digits", "digits-ft"], token=TOKEN)
        assert len(rep.versions) == 4
        yield {"url": url, "root": root, "ids": ids}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                 "--window-size=1200,1000"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except Exception as exc:   # noqa: BLE001 - a browser that cannot start here is a skip, with its reason
        pytest.skip(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(30)
    driver.downloads = downloads
    yield driver
    driver.quit()


def shot(driver, tmp_path: Path, name: str) -> None:
    """The whole page (up to 1600 px tall), not just the window."""
    import base64
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    png = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1200, "height": max(400, min(height, 1600)), "scale": 1}})
    out = tmp_path / f"{name}.png"
    out.write_bytes(base64.b64decode(png["data"]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    if os.environ.get("PAS_HUB_SCREENSHOTS"):
        dest = Path(os.environ["PAS_HUB_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, dest / out.name)


def wait_for(d, find, timeout: float = 10.0):
    """``find(d)`` once it gives something non-empty: a click that submits a form
    may return before the new page is there (a full run from a fresh clone once
    read no DQL results this way)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = find(d)
        except (NoSuchElementException, StaleElementReferenceException):
            got = None
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_publish_search_version_diff_lineage_download(site, browser, tmp_path):
    d, ids = browser, site["ids"]
    d.get(site["url"] + "/")
    assert "digits-ft" in d.find_element(By.TAG_NAME, "main").text
    shot(d, tmp_path, "index")
    d.find_element(By.LINK_TEXT, "zoo").click()
    # Search by text through the form.
    box = d.find_element(By.NAME, "q")
    box.send_keys("frozen")
    box.submit()
    rows = d.find_elements(By.CSS_SELECTOR, "#results tr")[1:]
    assert len(rows) == 1 and "digits-ft" in rows[0].text and "hyperparams" in rows[0].text
    assert d.find_elements(By.CSS_SELECTOR, "#search") and "frozen" in d.current_url
    shot(d, tmp_path, "search")
    # The version page: network graph, tensor table, metric plots, download button.
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert ids["digits-ft@1"][:12] in d.find_element(By.TAG_NAME, "h1").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#network svg g")) == 9          # Input .. Output
    assert len(d.find_elements(By.CSS_SELECTOR, "#tensors tr")) == 7               # header + 6 tensors
    assert len(d.find_elements(By.CSS_SELECTOR, "svg.plot polyline")) == 3         # loss, accuracy, lr
    shot(d, tmp_path, "version")
    # Download: the browser saves what `pas retrieve` writes.
    d.find_element(By.ID, "download").click()
    want = f"digits-ft-{ids['digits-ft@1'][:12]}.safetensors"
    deadline = time.monotonic() + 30
    while not (d.downloads / want).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with Repository.open(site["root"] / "hub") as r:
        formats.write(r.retrieve("digits-ft"), tmp_path / "expected.safetensors", "safetensors")
    assert (d.downloads / want).read_bytes() == (tmp_path / "expected.safetensors").read_bytes()
    # The diff with its parent (a copy of digits: only the classifier changed).
    d.find_element(By.ID, "diff-parent").click()
    weights = wait_for(d, lambda d: d.find_element(By.ID, "weights").text)
    assert "fc2.weight" in weights and "fc1.weight" not in weights
    assert "0.02" in d.find_element(By.ID, "hparams").text
    shot(d, tmp_path, "diff")
    # The lineage view: every ancestor drawn, this one's chain highlighted.
    d.get(f"{site['url']}/r/zoo/lineage/digits-ft")
    assert len(d.find_elements(By.CSS_SELECTOR, "#lineage svg g")) == 4
    assert len(d.find_elements(By.CSS_SELECTOR, "#lineage svg g.hl")) == 4
    assert len(d.find_elements(By.CSS_SELECTOR, "#ancestry tr")) == 5
    shot(d, tmp_path, "lineage")
    # A DQL select from the same form.
    d.get(f"{site['url']}/r/zoo")
    q = d.find_element(By.NAME, "dql")
    q.send_keys('select m where m.hparams.lr < 0.05')
    d.find_element(By.CSS_SELECTOR, "button[form=dqlform]").click()
    found = wait_for(d, lambda d: [r.text.split()[0] for r in d.find_elements(By.CSS_SELECTOR, "#results tr")[1:]])
    assert found == [ids["digits-ft@1"][:12]]
    # An error is a page with the message, escaped.
    d.get(f"{site['url']}/r/zoo/v/%3Cb%3Enope%3C%2Fb%3E")
    assert "<b>nope</b>" in d.find_element(By.ID, "message").text
