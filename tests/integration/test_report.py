"""The report: numbers checked against the field's libraries, files checked as a reader sees them."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, cli, copy_trained, populate, run_mlci

from mlci import errors
from mlci.evaluation.bootstrap import intervals, weighted_metrics
from mlci.evaluation.metrics import binary_metrics

ARTIFACTS = Path(os.environ.get("MLCI_TEST_ARTIFACTS", ROOT / ".test-artifacts"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory, trained_template) -> Path:
    """One untracked `mlci run` on the real data (a copy of the session's: conftest's ``trained_template``),
    shared by the read-only checks below."""
    return copy_trained(trained_template, populate(tmp_path_factory.mktemp("report")))


def scores(ws: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from mlci.modeling.artifact import load_model

    model, card = load_model(ws / "models")
    frame = pd.read_parquet(ws / "data" / "processed" / f"{split}.parquet")
    pos = list(model.classes_).index(card["positive_label"])
    return np.asarray(frame["income"] == card["positive_label"]), model.predict_proba(frame[card["features"]])[:, pos]


# -- the numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [None, 2])  # 2: heavy ties in the scores
def test_vectorised_metrics_equal_scikit_learn(ran, digits):
    y, p = scores(ran, "validation")
    if digits:
        p = np.round(p, digits)
    ours = weighted_metrics(y, p, np.ones((1, len(y))))
    assert {k: round(float(v[0]), 6) for k, v in ours.items()} == binary_metrics(y, p)
    # A resample is a vector of counts: the same as scikit-learn on the resampled rows.
    idx = np.random.default_rng(7).integers(0, len(y), len(y))
    counts = np.bincount(idx, minlength=len(y)).astype(np.float32)
    resampled = weighted_metrics(y, p, counts[None])
    expected = binary_metrics(y[idx], p[idx])
    assert all(abs(float(resampled[k][0]) - expected[k]) < 2e-6 for k in expected)


def test_intervals_are_reproducible_and_shrink_with_more_rows(ran):
    y, p = scores(ran, "validation")
    a, b = intervals(y, p, resamples=300, seed=3), intervals(y, p, resamples=300, seed=3)
    assert a == b
    for m in a.values():
        assert m["low"] <= m["value"] <= m["high"]
    small = intervals(y[:800], p[:800], resamples=300, seed=3)
    assert small["roc_auc"]["high"] - small["roc_auc"]["low"] > a["roc_auc"]["high"] - a["roc_auc"]["low"]


def test_group_rates_and_gaps_equal_fairlearn(ran):
    from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                                   false_positive_rate, selection_rate, true_positive_rate)

    from mlci.evaluation.groups import gaps, group_of, rates

    frame = pd.read_parquet(ran / "data" / "processed" / "validation.parquet")
    y, p = scores(ran, "validation")
    pred = p >= 0.5
    for column, edges in (("sex", None), ("race", None), ("age", [25, 35, 45, 55, 65])):
        groups = group_of(frame, column, edges)
        ours = rates(y, pred, groups)
        theirs = MetricFrame(metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                                      "false_positive_rate": false_positive_rate},
                             y_true=y.astype(int), y_pred=pred.astype(int),
                             sensitive_features=groups.astype(str).rename(column)).by_group
        for name in theirs.columns:
            assert np.allclose(ours.loc[theirs.index, name].to_numpy(float), theirs[name].to_numpy(float))
        got = gaps(y, pred, groups, min_group_size=1)
        assert got["demographic_parity_difference"] == round(
            demographic_parity_difference(y, pred, sensitive_features=groups.astype(str)), 6)
        assert got["equalized_odds_difference"] == round(
            equalized_odds_difference(y, pred, sensitive_features=groups.astype(str)), 6)
    # A group below min_group_size is left out of the gaps: race has groups of ~60 rows.
    race = group_of(frame, "race", None)
    assert gaps(y, pred, race, 1000) == {"demographic_parity_difference": None, "equalized_odds_difference": None}
    assert gaps(y, pred, race, 100) != gaps(y, pred, race, 1)


def test_permutation_importance_shuffles_the_raw_columns(ran):
    """Shuffling encoded columns in one batch equals shuffling raw columns through the Pipeline."""
    from sklearn.metrics import roc_auc_score

    from mlci.config.params import ReportParams
    from mlci.reporting.content import permutation
    from mlci.modeling.artifact import load_model

    model, card = load_model(ran / "models")
    frame = pd.read_parquet(ran / "data" / "processed" / "validation.parquet")
    y, _ = scores(ran, "validation")
    rp = ReportParams(permutation_rows=300, permutation_repeats=2, seed=5)
    mean, std = permutation(model, frame, y, card["features"], ">50K", rp)

    rng = np.random.default_rng(5)  # the same draws, in the same order, on the raw frame
    rows = np.sort(rng.choice(len(frame), size=300, replace=False))
    x, yy = frame[card["features"]].iloc[rows].reset_index(drop=True), y[rows]
    base = roc_auc_score(yy, model.predict_proba(x)[:, 1])
    expected = []
    for f in card["features"]:
        drops = []
        for _ in range(2):
            shuffled = x.copy()
            shuffled[f] = x[f].to_numpy()[rng.permutation(300)]
            drops.append(base - roc_auc_score(yy, model.predict_proba(shuffled)[:, 1]))
        expected.append(np.mean(drops))
    assert np.allclose(mean, expected)
    assert mean[card["features"].index("capital_gain")] > 0.01  # a feature the model leans on


# -- the files ------------------------------------------------------------------------------


def test_run_leaves_both_reports_junit_and_plots(ran):
    res = ran / "results"
    report = json.loads((res / "report.json").read_text())
    test = json.loads((res / "test_metadata.json").read_text())
    assert report["metrics"]["test"]["acc"]["value"] == test["test_acc"]
    assert report["metrics"]["test"]["roc_auc"]["value"] == test["test_roc_auc"]
    assert {g["column"] for g in report["groups"]} == {"sex", "race", "age"}
    assert sum(r["count"] for r in report["groups"][0]["groups"]) == test["rows"]["test"]
    assert report["champion"]["note"] == "tracking is off: no champion to compare with"
    md = (res / "report.md").read_text()
    for heading in ("## Gate", "## Metrics", "## Per-group metrics (test split)", "## Feature importance", "## Data"):
        assert heading in md
    assert "| accuracy | " in md and "95% bootstrap interval" in md
    for name in ("roc", "pr", "calibration", "confusion", "importance"):
        png = (res / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and f"plots/{name}.png" in md
    html = (res / "report.html").read_text()
    # Self-contained: every image inline, nothing fetched.
    assert html.count('src="data:image/png;base64,') == 5 and not re.search(r'(src|href)="(https?:)?//', html)
    cases = ET.parse(res / "junit.xml").getroot().findall(".//testcase")
    assert len(cases) == 4 and not ET.parse(res / "junit.xml").getroot().findall(".//failure")


def test_report_is_deterministic(ran, tmp_path):
    res = ran / "results"
    before = {p.name: p.read_bytes() for p in (res / "plots").iterdir()}
    before_metrics = json.loads((res / "report.json").read_text())["metrics"]
    proc = run_mlci("run", "--force", cwd=ran, env={"MLCI_NO_TRACK": "1"})
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_bytes() for p in (res / "plots").iterdir()} == before
    assert json.loads((res / "report.json").read_text())["metrics"] == before_metrics


def test_failed_gate_gives_junit_failures_and_a_report_without_the_test_split(small):
    workspace = small  # 6,000 rows: what the files say of a failed gate, not accuracy
    rules = "gate.rules=[{metric: validation_acc, min: 0.99}, {metric: validation_roc_auc, min: 0.9}]"
    result = cli("run", "-S", rules)
    assert result.exit_code == errors.GATE_FAILED
    root = ET.parse(workspace / "results" / "junit.xml").getroot()
    (failure,) = root.findall(".//failure")
    assert re.fullmatch(r"validation_acc = 0\.8\d{3} \(must be >= 0\.99\)", failure.get("message"))
    assert root.find("testsuite").get("failures") == "1" and len(root.findall(".//testcase")) == 2
    md = (workspace / "results" / "report.md").read_text()
    assert "gate FAILED" in md and "**FAIL**" in md and "the gate did not pass for this model" in md.lower()
    assert "| metric | validation |" in md and "test" not in json.loads(
        (workspace / "results" / "report.json").read_text())["metrics"]


def test_fairness_gaps_are_gate_rules(small):
    workspace = small  # 6,000 rows: the gaps are gate metrics, whatever their values
    rule = "gate.rules=[{metric: validation_equalized_odds_difference_sex, max: 0.01}]"
    result = cli("run", "-S", rule)
    assert result.exit_code == errors.GATE_FAILED
    assert "validation_equalized_odds_difference_sex = 0." in result.stderr and "(must be <= 0.01)" in result.stderr
    train = json.loads((workspace / "results" / "train_metadata.json").read_text())
    assert {"validation_demographic_parity_difference_race", "validation_equalized_odds_difference_age"} <= set(train)


def test_bad_report_input_is_one_clear_line(workspace):
    result = cli("report")
    assert result.exit_code == errors.PREREQUISITE and "no trained model; run `mlci train` first" in result.stderr
    bad = cli("run", "-S", "fairness.groups={salary: null}")
    assert bad.exit_code == errors.USAGE
    assert bad.stderr.strip() == ("error: fairness.groups: group column 'salary' is not a feature column of "
                                  "dataset 'adult'")
    bands = cli("run", "-S", "fairness.groups={age: [40, 30]}")
    assert bands.exit_code == errors.USAGE and "strictly increasing band edges" in bands.stderr


# -- in a browser ---------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<script>
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'mlci-probe';
  pre.textContent = JSON.stringify([...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(pre);
});
</script></body>"""


def _rendered_images(chromium: str, html: Path) -> list:
    """Load the page in headless Chromium; what every <img> decoded to (natural size)."""
    probe = html.with_name(html.stem + ".probe.html")
    probe.write_text(html.read_text().replace("</body>", PROBE))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="mlci-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium did not load {probe}: {proc.stderr[-500:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_renders_in_headless_chromium(ran, tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    page = tmp_path / "report.html"
    shutil.copy(ran / "results" / "report.html", page)
    images = _rendered_images(chromium, page)
    assert len(images) == 5 and all(w > 0 and h > 0 for _, w, h in images), images

    # The probe can fail: a damaged image decodes to nothing.
    broken = tmp_path / "broken.html"
    data = page.read_text()
    start = data.index("base64,") + len("base64,")
    broken.write_text(data[:start] + base64.b64encode(b"not a png").decode() + data[data.index('"', start):])
    assert any(w == 0 for _, w, _ in _rendered_images(chromium, broken))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,4200", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
