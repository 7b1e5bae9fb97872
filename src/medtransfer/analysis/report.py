"""``report.html``: one self-contained page (figures embedded as base64 PNG) holding the study's
config, Table 2, the figures, the statistics, and what was missing. Each figure links its PNG,
PDF and SVG files in ``analysis/figures/`` (relative links, so the study directory can move).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.study.table2 import INTERVAL, format_cell
from medtransfer.atomic import write_text_atomic
from medtransfer.errors import ConfigError

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.best{text-decoration:underline;font-weight:bold} figure{margin:1.5em 0} figcaption{font-size:.9em;color:#444}
img{max-width:100%} pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.8em}
.missing li{color:#8a4b00} .note{color:#555;font-size:.9em}
"""


@dataclass
class Figure:
    """One figure of the report: its PNG file and its caption."""

    png: Path
    caption: str


@dataclass
class ReportContent:
    """Everything the report shows; tables are plain DataFrames."""

    title: str
    config_text: str
    settings: dict
    table2: pd.DataFrame
    figures: list[Figure]
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)  # analysis/claims.csv's rows
    table2_caption: str = ""  # e.g. the incomplete cells of a --partial analysis
    # a study with a sweep: the sensitivity section's HTML (medtransfer.analysis.sensitivity.report_html)
    sensitivity_html: list[str] = field(default_factory=list)
    sections: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (title, note, table)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "n/a"


def layerwise_findings(similarity: pd.DataFrame, target: str, measure: str, higher_is_similar: bool = True) -> str:
    """One sentence for a layer-wise figure: which scores exceed their permutation null, and which
    differences between pairs at the same layer exceed both intervals (the intervals do not overlap).

    Scores and interval ends are fold means; "exceeds the null" means the score is beyond the fold
    mean of the null's 95% point (above for a similarity, below for a distance).
    """
    sub = similarity[(similarity["target"] == target) & (similarity["measure"] == measure)]
    if sub.empty:
        return ""
    cols = ["mean", "ci_low", "ci_high", "null_p95"]
    present = [c for c in cols if c in sub.columns]
    lines = sub.groupby(["pair", "strategy", "layer"], sort=False)[present].mean().reset_index()
    for c in cols:
        if c not in lines:
            lines[c] = np.nan
    label = lines["pair"].where(lines["strategy"] == "-", lines["pair"] + " (" + lines["strategy"] + ")")
    lines = lines.assign(label=label)
    with_null = lines[lines["null_p95"].notna() & lines["mean"].notna()]
    beyond = with_null["mean"] > with_null["null_p95"] if higher_is_similar else with_null["mean"] < with_null["null_p95"]
    parts = [f"{target}, {measure}:"]
    if len(with_null):
        failing = with_null[~beyond.to_numpy()]
        text = f"{int(beyond.sum())} of {len(with_null)} pair-layer scores exceed their permutation null's 95% point"
        if len(failing):
            shown = ", ".join(f"{r.label} at {r.layer}" for r in failing.head(3).itertuples())
            text += f" (not: {shown}{', ...' if len(failing) > 3 else ''})"
        parts.append(text + ";")
    else:
        parts.append("no permutation null was computed;")
    with_ci = lines[lines["ci_low"].notna()]
    separated, total, best = 0, 0, None
    for layer, group in with_ci.groupby("layer", sort=False):
        rows = list(group.itertuples())
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                total += 1
                lo, hi = (a, b) if a.mean <= b.mean else (b, a)
                gap = lo.ci_high < hi.ci_low
                separated += gap
                if gap and (best is None or hi.ci_low - lo.ci_high > best[0]):
                    best = (hi.ci_low - lo.ci_high, layer, hi, lo)
    if total:
        text = f"{separated} of {total} same-layer differences between pairs exceed both image-bootstrap intervals"
        if best is not None:
            _, layer, hi, lo = best
            text += (f", the clearest at {layer}: {hi.label} {_fmt(hi.mean)} [{_fmt(hi.ci_low)}, {_fmt(hi.ci_high)}] vs "
                     f"{lo.label} {_fmt(lo.mean)} [{_fmt(lo.ci_low)}, {_fmt(lo.ci_high)}]")
        parts.append(text + ".")
    else:
        parts.append("no image-bootstrap intervals were computed (too few images per repeat, or a measure without one).")
    return " ".join(parts)


def image_tag(png: Path, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a data URI."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table2_html(table: pd.DataFrame) -> str:
    """Table 2 as HTML: targets x (source, strategy), best mean per target underlined."""
    if table.empty:
        return "<p>No finished runs with predictions: no AUC table.</p>"
    columns = list(dict.fromkeys(zip(table["source"], table["strategy"])))
    sources = list(dict.fromkeys(s for s, _ in columns))
    head1 = "".join(f'<th colspan="{sum(1 for s, _ in columns if s == src)}">{html.escape(src)}</th>' for src in sources)
    head2 = "".join(f"<th>{html.escape(st)}</th>" for _, st in columns)
    body = []
    for target in dict.fromkeys(table["target"]):
        cells = [f"<td>{html.escape(str(target))}</td>"]
        sub = table[table["target"] == target].set_index(["source", "strategy"])
        for col in columns:
            if col not in sub.index:
                cells.append("<td>–</td>")
                continue
            row = sub.loc[col]
            text = html.escape(format_cell(row["mean"], row["std"], row["low"], row["high"]))
            cls = ' class="best"' if bool(row["best"]) else ""
            cells.append(f'<td{cls} title="{int(row["n"])} fold(s)">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table><thead><tr><th rowspan=2>target</th>" + head1 + "</tr><tr>" + head2 + "</tr></thead><tbody>"
        + "".join(body) + "</tbody></table>"
    )


CLAIM_SHOWN = ["claim", "target", "strategy", "layer", "measure", "statistic", "unit", "low", "high", "p_value", "p_adjusted",
               "test", "n", "verdict", "sentence"]


def claims_html(claims: pd.DataFrame) -> list[str]:
    """The report's first section: each of the paper's claims as a test (analysis/claims.csv)."""
    parts = ["<h2>Claims</h2>",
             '<p class="note">The paper\'s claims (sections 5.1-5.4), each as a test at its unit of independence: '
             "statistic with its 95% interval, p-value, Holm-adjusted p-value within the family named in the sentence, "
             "and a verdict at alpha 0.05 (supported / contradicted / inconclusive, or n too small). The tests, units "
             "and assumptions: docs/protocol.md. All rows: analysis/claims.csv.</p>"]
    if claims.empty:
        return parts + ["<p>No claim could be tested (see What was missing).</p>"]
    shown = claims[[c for c in CLAIM_SHOWN if c in claims.columns]]
    for name, group in shown.groupby("claim", sort=False):
        parts.append(f"<h3>{html.escape(str(name))}</h3>")
        parts.append(frame_html(group.drop(columns="claim")))
    return parts


def frame_html(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as an HTML table, floats rounded to ``digits``."""
    if frame.empty:
        return "<p>(no rows)</p>"
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "–" if not np.isfinite(v) else f"{v:.{digits}f}")
    return shown.to_html(index=False, escape=True, border=0)


def figure_links(png: Path, base: Path | None) -> str:
    """Links to the files of a figure (``name.png``, ``.pdf``, ``.svg`` that exist), relative to ``base``."""
    links = []
    for suffix in (".png", ".pdf", ".svg"):
        path = Path(png).with_suffix(suffix)
        if path.exists():
            href = os.path.relpath(path, base).replace(os.sep, "/") if base is not None else path.as_posix()
            links.append(f'<a href="{html.escape(href)}">{suffix[1:].upper()}</a>')
    return f' <span class="note">[{" · ".join(links)}]</span>' if links else ""


def render(content: ReportContent, base: Path | None = None) -> str:
    """The report's HTML text; figure links are relative to ``base`` (the report's folder)."""
    parts = [
        HEAD + GENERATOR,
        f"<title>{html.escape(content.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(content.title)}</h1>",
        *claims_html(content.claims),
        "<h2>Table 2: test AUC</h2>",
        '<p class="note">Mean ± std (both ×100, std over folds with ddof=1) of the test AUC recomputed from each '
        f"run's stored probabilities, with the {INTERVAL} in brackets (inside [0, 100]); "
        "underlined: highest mean per target.</p>",
        table2_html(content.table2),
        f'<p class="note">{html.escape(content.table2_caption)}</p>' if content.table2_caption else "",
        *content.sensitivity_html,
        "<h2>Figures</h2>",
    ]
    for fig in content.figures:
        parts.append(f"<figure>{image_tag(fig.png, fig.caption)}<figcaption>{html.escape(fig.caption)}"
                     f"{figure_links(fig.png, base)}</figcaption></figure>")
    if not content.figures:
        parts.append("<p>No figures could be drawn from this study.</p>")
    parts.append("<h2>Statistics</h2>")
    for title, note, frame in content.sections:
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append(frame_html(frame))
    parts.append("<h2>What was missing</h2>")
    if content.missing:
        parts.append('<ul class="missing">' + "".join(f"<li>{html.escape(m)}</li>" for m in content.missing) + "</ul>")
    else:
        parts.append("<p>Nothing: every run, pair and comparison was available.</p>")
    if content.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in content.notes) + "</ul>")
    parts.append("<h2>Configuration</h2><h3>Analysis settings</h3>")
    parts.append("<pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in content.settings.items())) + "</pre>")
    parts.append("<h3>study.yaml</h3>")
    parts.append("<pre>" + html.escape(content.config_text or "(no study.yaml found)") + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


HEAD = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
GENERATOR = "<meta name=generator content=medtransfer>"
_EARLIER = HEAD + "\n<title>medtransfer analysis"  # how reports of earlier versions began


def written_by_medtransfer(path: Path) -> bool:
    """Whether ``path`` is a report :func:`write_report` wrote (and may be replaced)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            start = handle.read(len(HEAD + GENERATOR) + 40)
    except OSError:
        return False
    return start.startswith(HEAD + GENERATOR) or start.startswith(_EARLIER)


def check_report_path(path: Path) -> None:
    """Refuse to replace a file at ``path`` that is not a medtransfer report (a file of the user's)."""
    path = Path(path)
    if path.exists() and not (path.is_file() and written_by_medtransfer(path)):
        raise ConfigError(f"{path} exists and was not written by medtransfer: it is left as it is; move it away "
                          "to write the report there")


def write_report(content: ReportContent, path: Path) -> Path:
    """Write the report atomically (temp file + rename) and return its path; a file there that
    medtransfer did not write is refused (:func:`check_report_path`)."""
    check_report_path(path)
    return write_text_atomic(path, render(content, Path(path).parent))
