"""LEADERBOARD.html: one self-contained page (every script, style, number and image inlined; no network; works
from ``file://``), rendered with jinja2 from ``bench/report/templates/leaderboard.html.j2``.

The page holds the run's provenance and integrity findings at the top, the headline per task group, filters
(dataset, task, prior, split, λ, budget, protocol — those with more than one value), a sortable table of mean ±
se per table row and solver with the verdicts, a detail panel (per-image values and reconstruction thumbnails) on
a click on a cell, and interactive anytime curves, data profiles and target ECDFs per task (uPlot, vendored in
``bench/report/static``: log axes, legend toggling, hover values). The data (:mod:`bench.report.html_data`) travels as gzip +
base64 JSON and is unpacked by the browser's ``DecompressionStream``.
"""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pandas as pd

from bench.core.metrics import decimals, quality_metric
from bench.core.schema import TRIVIAL
from bench.report import html_data
from bench.report.headline import d_quality, quality_headers
from bench.report.roles import role_solver
from bench.report.tables import solver_order

STATIC = Path(__file__).resolve().parent / "static"
TEMPLATES = Path(__file__).resolve().parent / "templates"
FILTERS = ["dataset", "base", "prior", "split", "lam", "budget", "protocol"]
FILTER_TITLES = {"dataset": "domain", "base": "task", "prior": "prior", "split": "split", "lam": "λ",
                 "budget": "budget", "protocol": "protocol"}


def payload(run_dir, df: pd.DataFrame, meta: dict, groups, prof, traces, problems, regime, facts, findings) -> dict:
    """Everything the page shows, as one JSON-able dict."""
    solvers = solver_order(df["solver"].unique(), meta)
    rows = html_data.table_rows(df, solvers)
    filters = {}
    for k in FILTERS:
        vals = sorted({r[k] for r in rows if r[k] not in (None, "")}, key=lambda v: (str(type(v)), v))
        if len(vals) > 1:
            filters[k] = vals
    head = []
    for label, t in groups:
        head.append({"label": label, "cells": int(t["cells"].iloc[0]), "tests": int(t["tests"].iloc[0]),
                     "rows": [{"solver": s, **{c: (html_data._r(v) if isinstance(v, float) else int(v))
                                               for c, v in r.items() if c not in ("cells", "tests")}}
                              for s, r in t.iterrows()]})
    quality = quality_metric()
    quality_head, delta_head = quality_headers()
    names = {"trivial": role_solver(TRIVIAL), "quality": quality, "d_quality": d_quality(),
             "quality_head": quality_head, "delta_head": delta_head, "digits": decimals(quality)}
    return {
        "facts": facts, "problems": list(problems), "findings": findings, "headline": head, "names": names,
        "solvers": solvers, "filters": filters, "filter_titles": FILTER_TITLES,
        "metrics": [{"name": m.name, "title": m.table, "hib": bool(m.higher_is_better), "dec": int(m.decimals)}
                    for m in html_data.table_metrics(df)],
        "rows": rows, "detail": html_data.details(df, rows), "sprites": html_data.sprites(run_dir, df, rows, solvers),
        "curves": html_data.curves(df, traces, prof, meta),
        "regime": [] if regime is None or regime.empty else json.loads(regime.to_json(orient="records")),
    }


def pack(data: dict) -> str:
    """gzip + base64 of the JSON text of ``data`` (what the page's script unpacks)."""
    raw = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode()


def render(title: str, data: dict) -> str:
    """The page's HTML text."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    return env.get_template("leaderboard.html.j2").render(
        title=title, facts=data["facts"], problems=data["problems"],
        css=(STATIC / "uPlot.min.css").read_text() + "\n" + (STATIC / "leaderboard.css").read_text(),
        js_lib=(STATIC / "uPlot.iife.min.js").read_text(), js_app=(STATIC / "leaderboard.js").read_text(),
        data=pack(data))


def write_html(path, run_dir, df: pd.DataFrame, meta: dict, *, title: str, groups, prof, traces, problems,
               regime) -> Path:
    """Write LEADERBOARD.html to ``path``; return the path. ``title``: the run's name."""
    from bench.report.findings import findings_text, run_fact_lines
    from bench.store.run_info import run_info

    facts = [line[2:].replace("`", "").replace("**", "") for line in run_fact_lines(df, meta, run_info(df, meta),
                                                                                      problems)]
    data = payload(run_dir, df, meta, groups, prof, traces, problems, regime, facts, findings_text(groups, df))
    path = Path(path)
    path.write_text(render(f"Leaderboard: {title}", data), encoding="utf-8")
    return path
