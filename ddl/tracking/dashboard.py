"""What makes the MLflow UI a dashboard for this job: the experiment's kind and description, the
links ddl prints. Pure text and dicts; store.py writes them."""
from __future__ import annotations

import base64
import json
import zlib
from collections import Counter
from typing import Iterable, Mapping, Optional

from ddl.tracking.keys import METRIC_KEYS, SWEEP_KEYS

EXPERIMENT_DESCRIPTION = """\
Runs of **ddl**, the Deep Learning Specialization's networks trained data-parallel.

How to read them (the course's "basic recipe", Course 2, week 1):

* `error/train`, `error/dev`, `error/test`: error rates (1 − accuracy) per epoch; `cost/…` the costs.
* `error/dev_best` (`error/test_best` without a dev split) and `epoch/dev_best`: the best held-out
  error so far and after how many epochs it was measured (the last epoch's is not always the best).
* `bias/avoidable` = train error − Bayes error (`tracking.bayes_error`, human-level as a proxy);
  `bias/variance` = dev error − train error (test error when a run has no dev split).
* The `diagnosis` tag: *high bias* (try a bigger network, train longer, a better optimizer),
  *high variance* (more data, L2 or dropout, early stopping), both, or *ok*. `diagnosis.split`
  says which split variance was judged on; each run's description says it in a sentence.
* A sweep is a parent run with one child per point: the parent's `sweep.best` tag names its best
  point, its `sweep/…` metrics and `bias_variance_map.png` artifact answer the sweep; its
  `sweep_table.md` ranks the points.
* `perf/…`: throughput (samples/s) and the allreduce's share of the step.

In the terminal: `ddl-report --experiment <name>` prints the same table best-first.
"""

EXPERIMENT_TAGS = {
    # "Model training" rather than GenAI: the kind MLflow's UI gives experiments it trains in
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": EXPERIMENT_DESCRIPTION,
}


def experiment_tags(now_ms: int) -> dict[str, str]:
    """The tags a ddl experiment carries: its kind, its description and the runs table's view."""
    return {**EXPERIMENT_TAGS, VIEW_TAG: encode_view(view_state(ALL_METRIC_KEYS), now_ms)}


def stale_tags(tags: Mapping[str, str], now_ms: int) -> dict[str, str]:
    """What an existing experiment lacks: missing tags (a description the user wrote is kept), and
    ddl's view when it is not the one this release writes."""
    wanted = experiment_tags(now_ms)
    stale = {k: v for k, v in wanted.items() if k not in tags}
    if VIEW_TAG in tags and _stored_view(tags[VIEW_TAG]) != view_state(ALL_METRIC_KEYS):
        stale[VIEW_TAG] = wanted[VIEW_TAG]
    return stale


def _stored_view(value: str) -> Optional[dict]:
    try:
        return decode_view(value)
    except (ValueError, KeyError, TypeError, zlib.error):
        return None

# --- the runs table's ready-made view --------------------------------------------------------------
# MLflow's UI opens a view saved as an experiment tag `mlflow.sharedViewState.<key>` when its URL
# carries `?viewStateShareKey=<key>`; the value is what the UI's own Share button writes (MLflow
# 3.17): an envelope {name, createdAt, updatedAt, state} whose state is "deflate;" + base64 of the
# zlib-deflated JSON of the runs page's search facets and UI state. `workflowType=machine_learning`
# in the same URL opens the "Model training" mode rather than GenAI.
VIEW_KEY = "ddl"
ALL_METRIC_KEYS = (*METRIC_KEYS.values(), *SWEEP_KEYS.values())
VIEW_NAME = "ddl: bias or variance?"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
WORKFLOW = "machine_learning"

# the table's columns, left to right: the answer first (a run's diagnosis, a sweep parent's best
# point), then the figures behind it, then the sweep parent's rollups. MLflow's assistant panel opens
# beside the table on a browser's first visit to a local server (its own localStorage; neither the
# view nor the URL can keep it closed), leaving ~750 px of table at 1366 px: the answer fits there.
VIEW_ANSWER = ("diagnosis", "sweep.best")
VIEW_METRICS = ("error/dev", "error/train", "bias/avoidable", "bias/variance", "error/dev_best",
                "epoch/dev_best", "error/test",
                "sweep/best_held_out_error", "sweep/points_finished", "sweep/points_failed")
VIEW_TAGS = ("diagnosis.split",)
# column widths in px (MLflow's: run name 190, created 150, every other 100), so that at 1366 px the
# answer ends left of the assistant: names such as "sweep decay_rate (2 points)", a diagnosis such as
# "high bias + high variance", a best point such as "adam decay_rate=1 (dev err 20.00%)"
RUN_NAME, CREATED = "attributes.`Run Name`", "runDateAndNestInfo"      # the grid's ids for them
VIEW_WIDTHS = {RUN_NAME: 195, CREATED: 130, "tags.`diagnosis`": 170, "tags.`sweep.best`": 230,
               "metrics.`error/dev_best`": 110, "metrics.`epoch/dev_best`": 110,
               "metrics.`sweep/best_held_out_error`": 190, "metrics.`sweep/points_finished`": 160,
               "metrics.`sweep/points_failed`": 150, "tags.`diagnosis.split`": 110}
# charts, by section: (section, title, metric keys drawn together)
VIEW_CHARTS = (
    ("error", "train vs dev error", ("error/train", "error/dev", "error/test")),
    ("bias", "avoidable bias and variance", ("bias/avoidable", "bias/variance")),
    ("cost", "train vs dev cost", ("cost/train", "cost/dev", "cost/test")),
    ("schedule", "learning rate", ("lr",)),
    ("perf", "samples/s", ("perf/samples_per_s",)),
    ("perf", "allreduce share of the step", ("perf/allreduce_share",)),
)
# steps on a log axis: a 300- and a 30,000-epoch run share a chart and both read (a log axis has no
# step 0, so a run's first epoch is not drawn)
X_SCALE = "log"


def _metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def _chart(uuid: str, section: str, keys: tuple[str, ...], title: Optional[str],
           deleted: bool = False) -> dict:
    chart = {"uuid": uuid, "type": "LINE", "runsCountToCompare": 10, "metricSectionId": section,
             "deleted": deleted, "isGenerated": False, "metricKey": keys[0], "lineSmoothness": 0,
             "xAxisKey": "step", "xAxisScaleType": X_SCALE, "scaleType": "linear",
             "selectedXAxisMetricKey": "", "range": {}, "yAxisKey": "metric", "yAxisExpressions": [],
             "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}
    if len(keys) > 1:
        chart["selectedMetricKeys"] = list(keys)
    if title:
        chart["displayName"] = title
    return chart


def view_state(all_metric_keys: Iterable[str]) -> dict:
    """The runs page as the course reads it: the diagnosis and a sweep's best point left, then error
    and bias columns, sorted by dev error; charts of train vs dev grouped in sections, in this order;
    every other metric in `all_metric_keys` gets a deleted chart, so the UI does not generate one
    chart per metric."""
    columns = ([f"tags.`{t}`" for t in VIEW_ANSWER] + [_metric_column(k) for k in VIEW_METRICS]
               + [f"tags.`{t}`" for t in VIEW_TAGS])
    drawn = {keys[0] for _, _, keys in VIEW_CHARTS}     # the UI matches charts on their first key
    charts = [_chart(f"ddl-{i}", f"ddl-{section}", keys, title)
              for i, (section, title, keys) in enumerate(VIEW_CHARTS)]
    charts += [_chart(f"ddl-hidden-{key}", "ddl-hidden", (key,), None, deleted=True)
               for key in sorted(set(all_metric_keys) - drawn)]
    per_section = Counter(section for section, _, _ in VIEW_CHARTS)       # in order of first chart
    return {
        "searchFilter": "", "orderByKey": _metric_column("error/dev"), "orderByAsc": True,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns, "columnOrder": [RUN_NAME, CREATED, *columns],
        "columnWidths": VIEW_WIDTHS,
        "runsHiddenMode": "SHOW_ALL", "compareRunCharts": charts,
        "compareRunSections": [{"uuid": f"ddl-{s}", "name": s, "display": True, "isReordered": False,
                                "columns": n} for s, n in per_section.items()],   # a card per column
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": True,   # our order
        "groupBy": None, "groupsExpanded": {}, "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True, "chartsSearchFilter": "",
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def encode_view(state: Mapping, now_ms: int) -> str:
    """The tag's value, as the UI's Share button writes it."""
    packed = "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    return json.dumps({"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": packed})


def decode_view(value: str) -> dict:
    """encode_view's inverse (a test and an upgrade check read the stored view back)."""
    packed = json.loads(value)["state"]
    return json.loads(zlib.decompress(base64.b64decode(packed[len("deflate;"):])).decode())


def ui_url(tracking_uri: str) -> str:
    """Where the UI answers: the tracking server itself, or `mlflow ui`'s default address."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def view_link(ui_url: str, experiment_id: str) -> str:
    """The runs page of the experiment, in model-training mode, opened on ddl's view."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?viewStateShareKey={VIEW_KEY}&workflowType={WORKFLOW}")
