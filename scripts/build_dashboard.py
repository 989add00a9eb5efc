"""Generate deploy/grafana/dashboards/inference-gateway.json (run after editing panels).

The dashboard is code: panels are declared here, the JSON is generated, and a test
checks that the committed JSON matches this script and that every query in it
evaluates against a real Prometheus scraping a real gateway.

    .venv/bin/python scripts/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parents[1] / "deploy/grafana/dashboards/inference-gateway.json"
DS = {"type": "prometheus", "uid": "prometheus"}
#: Every prediction route: /predict, /models/{name}[/versions/{version}]/predict and the
#: Open Inference Protocol's /v2/models/{name}[/versions/{version}]/infer.
PREDICT = 'endpoint=~"/predict|/models/.+/predict|/v2/models/.+/infer"'
#: The model selector: per-model panels show the models picked at the top.
MODEL = 'model_name=~"$model_name"'
#: gRPC calls that did not succeed: every status code but OK.
GRPC_FAILED = 'code!="OK"'
#: The version selector of the model-quality row (versions with a reference profile).
VERSION = 'model_name=~"$model_name",model_version=~"$model_version"'
#: The signal the live-against-reference distribution panel shows.
SIGNAL = 'signal="$signal"'

#: A time series panel: (title, unit, [(expr, legend)], exemplars?).
Series = tuple[str, str, list[tuple[str, str]], bool]
#: Any other panel, given whole: its JSON but for the id and the grid position.
Panel = dict[str, Any]

#: The last hour's live share of each bucket of the signal picked at the top beside the
#: reference's share of it: two instant queries as tables, merged on their labels into
#: one row per bucket, drawn as a pair of bars. Shares of one version: with several
#: picked, their buckets stand side by side under the same names.
DISTRIBUTION: Panel = {
    "type": "barchart",
    "title": "Live (last hour) vs reference share of each $signal bucket",
    "datasource": DS,
    "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0}, "overrides": []},
    "options": {
        "xField": "bucket",
        "orientation": "vertical",
        "showValue": "never",
        "groupWidth": 0.7,
        "barWidth": 0.9,
        "xTickLabelRotation": -45,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    },
    "targets": [
        {
            "refId": "A",
            "datasource": DS,
            "expr": f"model_version_signal_bucket:model_quality_observations:increase1h{{{VERSION},{SIGNAL}}} / on (model_name, model_version, signal) group_left () model_version_signal:model_quality_observations:increase1h{{{VERSION},{SIGNAL}}}",
            "legendFormat": "live (last hour)",
            "format": "table",
            "instant": True,
            "range": False,
        },
        {
            "refId": "B",
            "datasource": DS,
            "expr": f"model_version_signal_bucket:model_quality_reference_fraction:max{{{VERSION},{SIGNAL}}}",
            "legendFormat": "reference",
            "format": "table",
            "instant": True,
            "range": False,
        },
    ],
    "transformations": [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "renameByName": {"Value #A": "live (last hour)", "Value #B": "reference"},
            },
        },
    ],
}

# Per row, its panels (they share its width): time series as Series, others whole.
ROWS: list[tuple[str, list[Series | Panel]]] = [
    ("Traffic", [
        ("Requests/s by endpoint", "reqps",
         [("sum by (endpoint) (rate(http_requests_total[$__rate_interval]))", "{{endpoint}}")], False),
        ("Predictions/s by status", "reqps",
         [(f"sum by (status) (rate(http_requests_total{{{PREDICT}}}[$__rate_interval]))", "{{status}}")], False),
    ]),
    ("Errors", [
        ("Error responses/s by status", "reqps",
         [('sum by (status) (rate(http_requests_total{status=~"4..|5.."}[$__rate_interval]))', "{{status}}")], False),
        ("Exceptions/s by type, refusals/s by reason", "reqps",
         [("sum by (exception_type) (rate(http_request_exceptions_total[$__rate_interval]))", "{{exception_type}}"),
          ("sum by (reason) (rate(requests_rejected_total[$__rate_interval]))", "refused: {{reason}}"),
          ("sum by (reason) (rate(image_decode_failures_total[$__rate_interval]))", "undecodable: {{reason}}")], False),
    ]),
    ("Latency", [
        ("/predict latency P50 / P95 / P99 vs the 300 ms objective", "s",
         [(f"histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{{{PREDICT}}}[$__rate_interval])))", "P50"),
          (f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{PREDICT}}}[$__rate_interval])))", "P95"),
          (f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{PREDICT}}}[$__rate_interval])))", "P99"),
          ("vector(0.3)", "SLO 300 ms")], True),
        ("Where the time goes (mean per request)", "s",
         [(f"sum by (model_name) (rate(inference_queue_wait_seconds_sum{{{MODEL}}}[$__rate_interval])) / sum by (model_name) (rate(inference_queue_wait_seconds_count{{{MODEL}}}[$__rate_interval]))", "queue wait: {{model_name}}"),
          ("sum(rate(image_preprocess_duration_seconds_sum[$__rate_interval])) / sum(rate(image_preprocess_duration_seconds_count[$__rate_interval]))", "decode + preprocess"),
          (f"sum by (model_name) (rate(model_inference_duration_seconds_sum{{{MODEL}}}[$__rate_interval])) / sum by (model_name) (rate(model_inference_duration_seconds_count{{{MODEL}}}[$__rate_interval]))", "forward pass (per batch): {{model_name}}")], True),
    ]),
    ("gRPC service (GRPC_PORT)", [
        ("gRPC calls/s by method and code", "reqps",
         [("sum by (grpc_method, code) (rate(grpc_requests_total[$__rate_interval]))", "{{grpc_method}}: {{code}}")], False),
        ("gRPC error ratio by method (codes other than OK)", "percentunit",
         [(f"sum by (grpc_method) (rate(grpc_requests_total{{{GRPC_FAILED}}}[$__rate_interval])) / sum by (grpc_method) (rate(grpc_requests_total[$__rate_interval]))", "{{grpc_method}}")], False),
        ("gRPC latency P50 / P99 by method", "s",
         [("histogram_quantile(0.5, sum by (le, grpc_method) (rate(grpc_request_duration_seconds_bucket[$__rate_interval])))", "P50 {{grpc_method}}"),
          ("histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_request_duration_seconds_bucket[$__rate_interval])))", "P99 {{grpc_method}}"),
          ("vector(0.3)", "SLO 300 ms (ModelInfer)")], True),
    ]),
    ("Edge and tracing", [
        ("Requests refused below the router/s by reason", "reqps",
         [("sum by (reason) (rate(http_protocol_errors_total[$__rate_interval]))", "{{reason}}")], False),
        ("Traces kept/s by reason (tail sampling)", "reqps",
         [("sum by (reason) (rate(traces_kept_total[$__rate_interval]))", "{{reason}}")], False),
    ]),
    ("Saturation", [
        ("Active requests and inference queue", "short",
         [("sum(active_requests)", "active requests"),
          (f"sum by (model_name) (inference_queue_size{{{MODEL}}})", "queued or in the forward pass: {{model_name}}")], False),
        ("Images per forward pass (batch size)", "short",
         [(f"sum by (model_name) (rate(inference_batch_size_sum{{{MODEL}}}[$__rate_interval])) / sum by (model_name) (rate(inference_batch_size_count{{{MODEL}}}[$__rate_interval]))", "mean batch size: {{model_name}}"),
          (f"histogram_quantile(0.95, sum by (le, model_name) (rate(inference_batch_size_bucket{{{MODEL}}}[$__rate_interval])))", "P95 batch size: {{model_name}}")], False),
    ]),
    ("Model", [
        ("Top predicted classes/s", "reqps",
         [(f"topk(10, sum by (model_name, class) (rate(model_predictions_total{{{MODEL}}}[$__rate_interval])))", "{{model_name}}: {{class}}")], False),
        ("Top-1 confidence (share of predictions below each bound)", "percentunit",
         [(f"sum by (le) (rate(prediction_confidence_bucket{{{MODEL}}}[$__rate_interval])) / ignoring(le) group_left sum(rate(prediction_confidence_count{{{MODEL}}}[$__rate_interval]))", "≤ {{le}}")], False),
    ]),
    ("Model quality", [
        ("Drift: PSI per signal, last hour (0.1 moderate, 0.25 drift)", "short",
         [(f"model_version_signal:model_quality_psi:1h{{{VERSION}}}", "{{signal}}: {{model_name}} v{{model_version}}"),
          ("vector(0.1)", "moderate shift 0.1"), ("vector(0.25)", "drift 0.25")], False),
        ("Noise floor: the PSI chance alone reaches (drift needs it < 0.25)", "short",
         [(f"model_version_signal:model_quality_psi_noise:1h{{{VERSION}}}", "{{signal}}: {{model_name}} v{{model_version}}"),
          ("vector(0.25)", "drift 0.25")], False),
        DISTRIBUTION,
        ("Mean top-1 confidence (1h) vs the reference", "percentunit",
         [(f"model_version:prediction_confidence:mean1h{{{VERSION}}}", "live mean: {{model_name}} v{{model_version}}"),
          (f"model_version:model_quality_estimated_accuracy:1h{{{VERSION}}}", "estimated accuracy (calibrated models): {{model_name}} v{{model_version}}"),
          (f"model_version:model_quality_reference_confidence_mean:max{{{VERSION}}}", "reference mean: {{model_name}} v{{model_version}}"),
          (f"model_version:model_quality_confidence_drop_threshold:1h{{{VERSION}}}", "drop threshold (3 standard errors): {{model_name}} v{{model_version}}")], False),
    ]),
    ("Service level objectives", [
        ("Availability over 30 days (objective 99.5%)", "percent",
         [('(sum(rate(http_requests_total{status!~"5.."}[30d])) / sum(rate(http_requests_total[30d]))) * 100', "availability (all endpoints)"),
          ("(1 - slo:sli_error:ratio_rate30d) * 100", "availability (/predict)")], False),
        ("Error budget remaining (30 days)", "percentunit",
         [('1 - ((sum(rate(http_requests_total{status=~"5.."}[30d])) / sum(rate(http_requests_total[30d]))) / 0.005)', "all endpoints"),
          ("slo:error_budget:remaining30d", "/predict")], False),
    ]),
    ("Burn rates", [
        ("Error budget burn rate (1 = sustainable)", "short",
         [("slo:sli_error:ratio_rate5m / 0.005", "5m"), ("slo:sli_error:ratio_rate1h / 0.005", "1h"),
          ("slo:sli_error:ratio_rate6h / 0.005", "6h"), ("slo:sli_error:ratio_rate3d / 0.005", "3d"),
          ("vector(14.4)", "page (fast)"), ("vector(6)", "page (slow)")], False),
        ("/predict P99 over 7 days (objective < 300 ms)", "s",
         [(f"histogram_quantile(0.99, rate(http_request_duration_seconds_bucket{{{PREDICT}}}[7d]))", "P99 7d"),
          ("slo:latency_p99:1h", "P99 1h")], False),
    ]),
]  # fmt: skip


def _query_variable(
    name: str, label: str, query: str, ref_id: str, *, multi: bool = True, default: str = "All"
) -> dict[str, Any]:
    """A template variable whose values a PromQL ``label_values`` query lists; ``multi``
    offers several and All, else one (``default``)."""
    variable: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": ref_id},
        "definition": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
    }
    if multi:
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        variable["current"] = {"selected": True, "text": default, "value": default}
    variable["sort"] = 1
    return variable


#: The model selector at the top of the dashboard: every model that reports a state.
MODEL_VARIABLE = _query_variable(
    "model_name", "Model", "label_values(model_loaded, model_name)", "models"
)
#: The version selector: the versions of those models whose model-quality signals are on.
VERSION_VARIABLE = _query_variable(
    "model_version",
    "Version",
    'label_values(model_quality_reference_info{model_name=~"$model_name"}, model_version)',
    "versions",
)
#: The signal whose buckets the distribution panel shows, one at a time.
SIGNAL_VARIABLE = _query_variable(
    "signal",
    "Signal",
    "label_values(model_quality_reference_fraction, signal)",
    "signals",
    multi=False,
    default="class",
)


def _timeseries(pid: int, spec: Series, grid: dict[str, int]) -> dict[str, Any]:
    """A time series panel of its queries."""
    title, unit, queries, exemplars = spec
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(65 + n),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "exemplar": exemplars,
            }
            for n, (expr, legend) in enumerate(queries)
        ],
    }


def build() -> dict[str, Any]:
    """The dashboard model."""
    panels: list[dict[str, Any]] = []
    y = 0
    pid = 1
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        pid += 1
        y += 1
        width = 24 // len(row_panels)
        for i, spec in enumerate(row_panels):
            grid = {"h": 8, "w": width, "x": width * i, "y": y}
            if isinstance(spec, dict):
                panels.append({"id": pid, **spec, "gridPos": grid})
            else:
                panels.append(_timeseries(pid, spec, grid))
            pid += 1
        y += 8
    return {
        "uid": "inference-gateway",
        "title": "inference-gateway",
        "tags": ["inference-gateway", "slo"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": panels,
        "templating": {"list": [MODEL_VARIABLE, VERSION_VARIABLE, SIGNAL_VARIABLE]},
        "annotations": {"list": []},
    }


def render() -> str:
    """The JSON text as committed."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
