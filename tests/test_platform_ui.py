"""The platform's web UI in headless Chromium, against a real `fakefinder serve` subprocess.

One flow over the whole stack: the start form (kinds, dataset picker, extra settings, config
preview) starts a seconds-long CPU training run; the job page follows it live (state, chart, log)
and opens its report; a second run is compared with the first. A second server with a token checks
the token prompt. Screenshots go to tests/output/ui/ (gitignored), and also to
$FAKEFINDER_TEST_OUTPUT/ui/ when that is set; those the platform guide shows (SHOWN) are also written
to docs/assets/ui/, which is committed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import Server, start_server, stop_server, toy_zip

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parent / "output" / "ui"
# the shots the platform guide shows: taken here, on a real server, and committed with the docs
DOC_SHOTS = Path(__file__).resolve().parents[1] / "docs" / "assets" / "ui"
SHOWN = (
    "01-start-form",
    "03-job-finished",
    "04b-heatmaps",
    "05-job-list",
    "06b-compare-charts",
    "08-upload",
    "10-sweep",
)
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}
TINY = {
    "base_model": "test_efficientnet",
    "dataset_path": "faces",
    "batch_size": 8,
    "pretrained": False,
    "image_size": 32,
    "train.num_workers": 0,
    "model.dropout": 0.0,
}
EXTRA = "pretrained: false\nimage_size: 32\ntrain.num_workers: 0\nmodel.dropout: 0.0"


# ---------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("platform") / "data", "--demo-data")
    yield srv
    stop_server(srv)


# ---------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    saved: list[Path] = []
    yield saved
    target = os.environ.get("FAKEFINDER_TEST_OUTPUT")
    if target and saved:
        dest = Path(target) / "ui"
        dest.mkdir(parents=True, exist_ok=True)
        for path in saved:
            shutil.copy2(path, dest / path.name)
    print(f"\nUI screenshots: {SHOTS}" + (f" (copied to {Path(target) / 'ui'})" if target and saved else ""))


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: run scripts/test.sh (it installs chromium and "
            "chromium-driver) before the UI tests"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fakefinder-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    driver.console = []  # every browser log entry read so far
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            driver_process = getattr(service, "process", None)
            if driver_process is not None and driver_process.poll() is None:
                driver_process.kill()
                driver_process.wait(timeout=10)
            shutil.rmtree(profile, ignore_errors=True)


def js_errors(driver) -> list[dict]:
    """SEVERE browser log entries that are JavaScript errors (failed HTTP responses are logged as
    'network' entries: the UI handles those itself, e.g. a 422 from the preview or a 401)."""
    driver.console += driver.get_log("browser")
    return [
        e
        for e in driver.console
        if e.get("level") == "SEVERE"
        and e.get("source") != "network"
        and "Failed to load resource" not in e.get("message", "")
    ]


def assert_no_js_errors(driver) -> None:
    errors = js_errors(driver)
    assert not errors, "JavaScript errors in the browser console:\n" + "\n".join(e["message"] for e in errors)


def wait(driver, seconds: float, condition, message: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # IndexError: `css(...)[0]` on an element the page has not drawn yet (it renders after loading)
    return WebDriverWait(
        driver, seconds, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException, IndexError)
    ).until(condition, message)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    """The text of the first element `selector` finds; read again when the page redrew it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):
        found = css(driver, selector)
        try:
            return found[0].text if found else ""
        except StaleElementReferenceException:
            time.sleep(0.2)
    return ""


def fill(driver, selector: str, value: str) -> None:
    element = css(driver, selector)[0]
    element.clear()
    element.send_keys(value)


def shot(driver, shots: list, name: str) -> None:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if name in SHOWN:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, DOC_SHOTS / path.name)
    shots.append(path)


def wait_for_job(server: Server, task_id: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        job = server.api("GET", f"/api/training/{task_id}")
        if job["state"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {task_id} still {job['state']} after {seconds} s: {job}\n{server.log_tail()}")
        time.sleep(0.5)


def class_folders_zip(path: Path) -> Path:
    """A tiny image-classifier dataset as a ZIP: train/val/<class>/*.png."""
    import io
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(path, "w") as archive:
        for split, count in (("train", 4), ("val", 2)):
            for c, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
                for i in range(count):
                    buffer = io.BytesIO()
                    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
                    archive.writestr(f"{split}/{c}/{i}.png", buffer.getvalue())
    return path


# ---------------------------------------------------------------------------------------- tests

runs: dict[str, tuple[str, str]] = {}  # "first" -> (task_id, name), filled by the first test


def _check_kinds_offer_their_datasets(d) -> None:
    """Each kind picked in the start form is offered only the datasets it trains on."""
    from selenium.webdriver.support.ui import Select

    # a language-model kind is in the form too, offered the instruction data only
    Select(css(d, "#model-type")[0]).select_by_value("llm_qlora")
    wait(
        d,
        10,
        lambda d: css(d, "#dataset option[value=instructions]") and css(d, "#field-base_model"),
        "no `instructions` dataset (or no base_model field) for llm_qlora",
    )
    assert "faces" not in [o.get_attribute("value") for o in css(d, "#dataset option")]

    def offered(d) -> list[str]:
        return [
            o.get_attribute("value")
            for o in css(d, "#dataset option")
            if o.get_attribute("value") not in ("", "__custom__")
        ]

    # the object detector on YOLO data, the text-to-image LoRA on captioned images: each alone
    for kind, dataset, field in (
        ("object_detector", "shapes", "image_size"),
        ("text_to_image_lora", "captions", "base_model"),
    ):
        Select(css(d, "#model-type")[0]).select_by_value(kind)
        wait(
            d,
            10,
            lambda d, dataset=dataset, field=field: offered(d) == [dataset] and css(d, f"#field-{field}"),
            f"{kind} is not offered the `{dataset}` dataset alone",
        )
    Select(css(d, "#model-type")[0]).select_by_value("deepfake_detector")
    wait(
        d,
        10,
        lambda d: css(d, "#field-base_model") and css(d, "#dataset option[value=faces]"),
        "the form has no base_model field or no `faces` dataset in the picker",
    )


def _fill_start_form(d) -> None:
    """A deepfake_detector run on `faces`, filled in; the config preview shows every setting."""
    from selenium.webdriver.support.ui import Select

    # the picker shows only datasets this kind trains on, with their layout and counts
    options = [o.get_attribute("value") for o in css(d, "#dataset option")]
    assert "classes" not in options and "dx" not in options, options
    Select(css(d, "#dataset")[0]).select_by_value("faces")
    assert "train" in text_of(d, "#dataset-info"), text_of(d, "#dataset-info")
    fill(d, "#name", "ui-first")
    fill(d, "#field-base_model", "test_efficientnet")
    fill(d, "#field-epochs", "2")
    fill(d, "#field-batch_size", "8")
    fill(d, "#extra", EXTRA)
    wanted = (
        "test_efficientnet",
        "image_size: 32",
        "pretrained: false",
        "num_workers: 0",
        "epochs: 2",
        "batch_size: 8",
    )

    def fresh(d):
        return "stale" not in css(d, "#preview")[0].get_attribute("class")

    wait(
        d,
        20,
        lambda d: fresh(d) and all(w in text_of(d, "#preview") for w in wanted),
        f"the config preview lacks one of {wanted}: {text_of(d, '#preview')[:1500]} / "
        f"{text_of(d, '#form-error')}",
    )


def _check_inline_error(d, shots) -> None:
    """An invalid value is reported next to the form, naming the field, then cleared again."""
    fill(d, "#field-epochs", "0")
    wait(d, 15, lambda d: "epochs" in text_of(d, "#form-error"), "no inline error naming epochs for epochs=0")
    assert css(d, "#field-epochs.invalid"), "the epochs field is not marked invalid"
    assert "epochs" in text_of(d, "#error-epochs"), "no error next to the epochs field"
    shot(d, shots, "01a-start-form-error")
    fill(d, "#field-epochs", "2")
    wait(
        d,
        15,
        lambda d: not css(d, "#form-error")[0].is_displayed() and "epochs: 2" in text_of(d, "#preview"),
        "the error did not clear",
    )
    css(d, "#preview-changed")[0].click()  # the preview shows only what differs from the defaults
    assert "image_size: 32" in text_of(d, "#preview") and "seek:" not in text_of(d, "#preview")
    shot(d, shots, "01-start-form")


def _start_and_follow_job(d, server, shots) -> None:
    """Start the run; the job page follows it live to its end (state, chart, log, progress)."""
    css(d, "#start")[0].click()
    wait(d, 20, lambda d: "#/jobs/" in d.current_url, "Start did not open the job page")
    task_id = d.current_url.split("#/jobs/", 1)[1]
    runs["first"] = (task_id, "ui-first")
    wait(d, 20, lambda d: text_of(d, "#job-name") == "ui-first", "the job page shows no name")
    wait(
        d,
        60,
        lambda d: css(d, "#job-state")[0].get_attribute("data-state") in {"running"} | TERMINAL,
        "the job never started",
    )
    # mid-run, once the first epoch is on the chart (or at the end, when the run was quicker than the page)
    wait(
        d,
        120,
        lambda d: (
            css(d, "#job-state")[0].get_attribute("data-state") in TERMINAL or css(d, "#chart circle.pt")
        ),
        f"no epoch reached the chart within 120 s\n{server.log_tail()}",
    )
    shot(d, shots, "02-job-running")
    wait(
        d,
        180,
        lambda d: css(d, "#job-state")[0].get_attribute("data-state") in TERMINAL,
        f"the job did not finish within 180 s\n{server.log_tail()}",
    )
    state = css(d, "#job-state")[0].get_attribute("data-state")
    assert state == "succeeded", (
        f"job {state}: {text_of(d, '#job-error')}\nlog:\n{text_of(d, '#log')[-3000:]}"
    )
    wait(d, 20, lambda d: len(css(d, "#chart circle.pt")) >= 2, "the loss chart drew no points")
    wait(d, 20, lambda d: css(d, "#log .line"), "the log shows no lines")
    assert "train_loss" in text_of(d, "#chart .legend"), text_of(d, "#chart .legend")
    assert css(d, "#stop")[0].get_attribute("disabled") is not None, "Stop is enabled on a finished job"
    assert css(d, "#delete")[0].get_attribute("disabled") is None, "Delete is disabled on a finished job"
    wait(d, 20, lambda d: css(d, "#report-link") and css(d, "#files a"), "no report link or file list")
    assert "100%" in text_of(d, "#progress-text") or "epoch 2/2" in text_of(d, "#progress-text"), text_of(
        d, "#progress-text"
    )
    d.execute_script("window.scrollTo(0, 0)")
    shot(d, shots, "03-job-finished")
    d.execute_script("document.getElementById('log').scrollIntoView({block: 'end'})")
    shot(d, shots, "03b-job-finished-log")
    d.execute_script("window.scrollTo(0, 0)")


def _check_report_tab(d, shots) -> None:
    """The report link opens the run's report, with its metrics table, in a new tab."""
    main = d.current_window_handle
    css(d, "#report-link")[0].click()
    wait(d, 10, lambda d: len(d.window_handles) > 1, "the report link opened no tab")
    d.switch_to.window([w for w in d.window_handles if w != main][0])
    try:
        wait(d, 20, lambda d: "<table" in d.page_source, "the report has no metrics table")
        assert "auc" in d.page_source.lower()
        shot(d, shots, "04-report")
    finally:
        d.close()
        d.switch_to.window(main)


def _check_heatmaps_and_predict_form(d, server, shots, tmp_path) -> None:
    """The run's evaluation shows its heatmaps (figures, the experimental notice where the API calls
    them so, the gallery's overlays loaded); the predict form offers heatmaps, as the kind draws
    them, and names the field of a file it refuses."""
    task_id = runs["first"][0]
    sets = server.api("GET", f"/api/evaluate/{task_id}/heatmaps")["sets"]
    overlays = "#heatmaps-card .gallery img.overlay"
    wait(d, 20, lambda d: len(css(d, overlays)) == sum(len(s["gallery"]) for s in sets), "no heatmap gallery")
    wait(
        d,
        10,
        lambda d: all(img.get_property("naturalWidth") > 0 for img in css(d, overlays)),
        "a gallery overlay did not load",
    )
    assert bool(css(d, "#heatmaps-experimental")) == any(s["experimental"] for s in sets)
    assert css(d, "#heatmap-figures tr[data-figure=pointing]") or css(d, "#heatmap-validation tr"), text_of(
        d, "#heatmaps-card"
    )
    assert ":" not in text_of(d, "#heatmaps-card .regions")  # the regions' shares as people read them
    d.execute_script("document.getElementById('heatmaps-card').scrollIntoView()")
    shot(d, shots, "04b-heatmaps")
    assert css(d, "#predict-draw-heatmaps")[0].is_displayed(), "the predict form offers no heatmaps"
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    css(d, "#predict-file")[0].send_keys(str(notes))
    d.execute_script("document.getElementById('predict-card').scrollIntoView({block: 'center'})")
    css(d, "#predict-start")[0].click()
    wait(d, 10, lambda d: "file" in text_of(d, "#predict-error"), "the refused file is not named")


def test_start_form_trains_and_job_page_follows_it(
    browser, server, shots, tmp_path
):  # the browser first: a missing chromium fails at once
    d = browser
    d.get(server.url + "/#/start")
    wait(
        d,
        20,
        lambda d: css(d, "#model-type option[value=deepfake_detector]"),
        "no deepfake_detector in #model-type",
    )
    _check_kinds_offer_their_datasets(d)
    _fill_start_form(d)
    _check_inline_error(d, shots)
    _start_and_follow_job(d, server, shots)
    _check_report_tab(d, shots)
    _check_heatmaps_and_predict_form(d, server, shots, tmp_path)
    assert_no_js_errors(d)


def test_job_list_compares_two_runs(
    browser, server, shots
):  # the browser first: a missing chromium fails at once
    d = browser
    if "first" not in runs:  # the first test failed: train its run through the API
        first = server.api(
            "POST",
            "/api/training/start",
            json={"model_type": "deepfake_detector", "name": "ui-first", "epochs": 2, **TINY},
        )
        runs["first"] = (first["task_id"], "ui-first")
    second = server.api(
        "POST",
        "/api/training/start",
        json={
            "model_type": "deepfake_detector",
            "name": "ui-second",
            "epochs": 1,
            "learning_rate": 0.003,
            **TINY,
        },
    )
    d.get(server.url + "/#/jobs")
    wait(
        d,
        20,
        lambda d: css(d, f"tr[data-job-id='{second['task_id']}']"),
        "the new run is not in the job list",
    )
    shot(d, shots, "05-job-list")
    for task_id, _ in (runs["first"], (second["task_id"], "ui-second")):
        assert wait_for_job(server, task_id, 150)["state"] == "succeeded"
    # the list refreshes itself: both runs show as succeeded without a reload
    wait(
        d,
        15,
        lambda d: all(
            css(d, f"tr[data-job-id='{t}'] .badge.state-succeeded")
            for t in (runs["first"][0], second["task_id"])
        ),
        "the job list did not refresh",
    )

    def tick(task_id):
        def check(d):
            box = css(d, f"input[data-testid='select-{task_id}']")[0]
            if not box.is_selected():
                box.click()
            return css(d, f"input[data-testid='select-{task_id}']")[0].is_selected()

        wait(d, 10, check, f"cannot select {task_id}")

    tick(runs["first"][0])
    tick(second["task_id"])
    wait(d, 5, lambda d: css(d, "#compare")[0].is_enabled(), "Compare stays disabled")
    css(d, "#compare")[0].click()
    wait(d, 20, lambda d: css(d, "#compare-table"), "the comparison did not load")
    assert "ui-first" in d.current_url or runs["first"][0] in d.current_url
    legends = [e.text for e in css(d, ".compare-chart .legend-name")]
    assert {"ui-first", "ui-second"} <= set(legends), legends
    header = text_of(d, "#compare-table thead")
    assert "ui-first" in header and "ui-second" in header, header
    assert css(d, ".compare-chart circle.pt"), "the comparison charts drew no points"
    assert css(d, "#compare-table td.best"), "no best value is highlighted"
    shot(d, shots, "06-compare")
    d.execute_script("document.getElementById('compare-charts').scrollIntoView()")
    shot(d, shots, "06b-compare-charts")
    assert_no_js_errors(d)


def test_stop_resume_and_delete_from_the_job_page(
    browser, server, shots
):  # the browser first: a missing chromium fails at once
    d = browser
    job = server.api(
        "POST",
        "/api/training/start",
        # no early stopping: only the Stop button may end this run
        json={
            "model_type": "deepfake_detector",
            "name": "ui-stop",
            "epochs": 500,
            "train.early_stopping.patience": None,
            **TINY,
        },
    )
    task_id = job["task_id"]

    def state(d):
        return css(d, "#job-state")[0].get_attribute("data-state")

    def enabled(selector):
        return css(d, selector)[0].get_attribute("disabled") is None

    d.get(f"{server.url}/#/jobs/{task_id}")
    wait(
        d,
        60,
        lambda d: state(d) == "running" and css(d, "#chart circle.pt"),
        "the long run never reached an epoch",
    )
    assert enabled("#stop") and not enabled("#resume") and not enabled("#delete")
    css(d, "#stop")[0].click()
    wait(d, 60, lambda d: state(d) == "cancelled", f"Stop did not cancel the run: {state(d)}")
    wait(
        d,
        10,
        lambda d: enabled("#resume") and enabled("#delete") and not enabled("#stop"),
        "Resume / Delete not enabled on a stopped run",
    )
    shot(d, shots, "09-stopped")
    epochs_before = len(server.api("GET", f"/api/training/{task_id}/metrics")["history"])
    css(d, "#resume")[0].click()
    wait(
        d,
        60,
        lambda d: state(d) == "running" and not enabled("#resume"),
        f"Resume did not restart the run: {state(d)}",
    )
    wait(
        d,
        60,
        lambda d: len(server.api("GET", f"/api/training/{task_id}/metrics")["history"]) > epochs_before,
        "the resumed run reported no further epoch",
    )
    css(d, "#stop")[0].click()
    wait(d, 60, lambda d: state(d) == "cancelled", f"the second Stop did not cancel the run: {state(d)}")
    assert server.api("GET", f"/api/training/{task_id}")["attempts"] >= 2
    wait(d, 10, lambda d: enabled("#delete"), "Delete stays disabled")
    css(d, "#delete")[0].click()
    wait(d, 5, lambda d: d.switch_to.alert, "no confirmation before Delete").accept()
    wait(
        d,
        20,
        lambda d: d.current_url.endswith("#/jobs") and css(d, "#jobs-table"),
        "Delete did not go back to the list",
    )
    wait(d, 10, lambda d: not css(d, f"tr[data-job-id='{task_id}']"), "the deleted job is still listed")
    assert requests.get(f"{server.url}/api/training/{task_id}", timeout=10).status_code == 404
    assert_no_js_errors(d)


def test_token_prompt_stores_the_token_and_sends_it(browser, shots, tmp_path):
    d = browser
    srv = start_server(tmp_path / "data", token="s3cret-token")
    try:
        assert requests.get(srv.url + "/api/training", timeout=10).status_code == 401
        d.get(srv.url + "/#/jobs")
        wait(
            d,
            15,
            lambda d: css(d, "#token-dialog")[0].get_attribute("open") is not None,
            "no token prompt after a 401",
        )
        shot(d, shots, "07-token-prompt")
        fill(d, "#token-input", "s3cret-token")
        css(d, "#token-save")[0].click()
        wait(
            d,
            15,
            lambda d: css(d, "#jobs-table") and css(d, "#jobs-empty")[0].is_displayed(),
            "the job list did not load with the token",
        )
        assert d.execute_script("return localStorage.getItem('fakefinder.token')") == "s3cret-token"
        assert css(d, "#token-dialog")[0].get_attribute("open") is None
        wait(
            d,
            10,
            lambda d: text_of(d, "#server-info") not in ("", "token needed"),
            "health was not fetched with the token",
        )
        # the start form's calls (kinds, datasets, preview) carry it too
        d.get(srv.url + "/#/start")
        wait(
            d,
            20,
            lambda d: css(d, "#model-type option") and text_of(d, "#preview-status") not in ("", "updating…"),
            f"the start form did not load with the token: {text_of(d, '#view')[:500]}",
        )
        assert "token" not in text_of(d, "#preview-status").lower(), text_of(d, "#preview-status")
        assert css(d, "#token-dialog")[0].get_attribute("open") is None
        # a ZIP upload (multipart, with the token) refreshes the picker and selects the new dataset
        from selenium.webdriver.support.ui import Select

        Select(css(d, "#model-type")[0]).select_by_value("image_classifier")
        css(d, "#upload-box summary")[0].click()
        css(d, "#upload-file")[0].send_keys(str(class_folders_zip(tmp_path / "mine.zip")))
        fill(d, "#upload-name", "mine")
        css(d, "#upload")[0].click()
        wait(
            d,
            30,
            lambda d: "Uploaded" in text_of(d, "#upload-status"),
            f"upload failed: {text_of(d, '#upload-status')}",
        )
        listed = {ds["name"]: ds for ds in srv.api("GET", "/api/datasets")["datasets"]}
        assert "mine" in listed, listed
        assert "image_classifier" in listed["mine"]["kinds"], listed["mine"]
        wait(
            d,
            10,
            lambda d: css(d, "#dataset")[0].get_attribute("value") == "mine",
            "the picker did not select the upload",
        )
        shot(d, shots, "08-upload")
        assert_no_js_errors(d)
    finally:
        stop_server(srv)


def test_a_sweep_page_shows_its_trials_and_the_metric_against_each_setting(browser, shots, toy, tmp_path):
    """A sweep on the test-only toy kind (its loss curve fixed by the learning rate): the page lists each
    trial with its settings, state and value, plots the loss against each searched setting, and a trial's
    page leads back to its sweep."""
    d = browser
    os.environ["FAKEFINDER_KINDS"] = "toy_regressor:KIND"  # the server and its workers load the toy kind
    try:
        srv = start_server(tmp_path / "data", "--jobs-per-device", "2", "--poll-interval", "0.2")
    finally:
        os.environ.pop("FAKEFINDER_KINDS")
    try:
        srv.api("POST", "/api/datasets", data={"name": "numbers"}, files={"file": ("n.zip", toy_zip(toy))})
        rates = [0.2, 0.1, 0.001, 0.05]
        sweep = srv.api(
            "POST",
            "/api/sweeps",
            json={
                "model_type": "toy_regressor",
                "name": "toy-sweep",
                "dataset_path": "numbers",
                "epochs": 6,
                "step_seconds": 0.3,
                "sweep": {
                    "metric": "loss",
                    "direction": "minimize",
                    "stage": "train",
                    "trials": 4,
                    "concurrency": 2,
                    "space": {
                        "toy.train.lr": {"low": 0.001, "high": 0.2, "log": True},
                        "toy.width": {"choices": [4, 8]},
                    },
                    "enqueue": [
                        {"toy.train.lr": r, "toy.width": 4 + 4 * (i % 2)} for i, r in enumerate(rates)
                    ],
                    "warmup_steps": 1,
                },
            },
        )
        ended = wait_for_job(srv, sweep["task_id"], 120)
        trials = srv.api("GET", f"/api/sweeps/{sweep['task_id']}")["trials"]
        assert ended["state"] == "succeeded", (ended["error"], trials)
        d.get(f"{srv.url}/#/jobs/{sweep['task_id']}")
        wait(d, 20, lambda d: len(css(d, "#trials-body tr")) == 4, "the sweep page lists no four trials")
        # read at once: the panel redraws as the page's stream reports the sweep
        rows = dict(
            d.execute_script(
                "return [...document.querySelectorAll('#trials-body tr')]"
                ".map(r => [r.dataset.trial, r.innerText])"
            )
        )
        rows = {int(k): v for k, v in rows.items()}
        assert "pruned" in rows[2] and "0.001" in rows[2] and "toy-sweep-trial-2" in rows[2]
        assert "complete" in rows[0] and "0.2" in rows[0]
        best = d.execute_script("return document.querySelector('#trials-body tr.best-trial').dataset.trial")
        assert best == str(ended["result"]["best"]["number"])
        charts = d.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#sweep-charts .chart-wrap')].map("
            "c => [c.dataset.setting, [c.querySelectorAll('circle.pt').length, c.textContent]]))"
        )
        assert set(charts) == {"toy.train.lr", "toy.width"}
        shown = [t for t in trials if t["state"] in ("complete", "pruned")]
        assert [count for count, _ in charts.values()] == [len(shown)] * 2
        assert "log10 toy.train.lr" in charts["toy.train.lr"][1] and "0: 4, 1: 8" in charts["toy.width"][1]
        d.execute_script("window.scrollTo(0, document.getElementById('sweep-card').offsetTop - 64)")
        shot(d, shots, "10-sweep")
        css(d, "#trials-body tr[data-trial='2'] a")[0].click()
        wait(d, 20, lambda d: css(d, "#job-parent"), "a trial's page does not lead to its sweep")
        assert "cancelled" == css(d, "#job-state")[0].get_attribute("data-state")
        css(d, "#job-parent")[0].click()
        wait(d, 20, lambda d: css(d, "#trials-body tr"), "the sweep link does not lead back")
        assert_no_js_errors(d)
    finally:
        stop_server(srv)
