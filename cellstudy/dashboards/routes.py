"""Dashboards (issue 6): the monitor's per assigned site, the data manager's across sites.

  /dashboards/monitor?site=HZ   view_dashboards (monitors: their sites; data managers: any)
  /dashboards/data-manager      all_sites (data managers): every site, totals, locks
A site that is not the user's is a 404 (PROTOCOL 2: it is not acknowledged to exist)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from ..auth.policy import ALL_SITES, allowed_sites, require
from ..infusions.judgement import locked_planned
from . import service

bp = Blueprint("dashboards", __name__, url_prefix="/dashboards")


@bp.route("/monitor", endpoint="monitor")
@require("view_dashboards")
def monitor_dashboard():
    sites = allowed_sites()
    code = (request.args.get("site") or "").strip().upper()
    if code:
        site = next((s for s in sites if s.code == code), None)
        if site is None:
            abort(404)
    else:
        site = sites[0] if sites else None
    board = service.build([site.id] if site else [])
    figures = board.sites[0] if board.sites else None
    return render_template(
        "dashboards/monitor.html",
        board=board,
        figures=figures,
        site=site,
        sites=sites,
        buckets=[b for b, _, _ in service.AGE_BUCKETS],
        locked=locked_planned([site.id] if site else []),
    )


@bp.route("/data-manager", endpoint="data_manager")
@require("all_sites")
def data_manager_dashboard():
    board = service.build(ALL_SITES)
    return render_template(
        "dashboards/data_manager.html",
        board=board,
        total=board.total(),
        buckets=[b for b, _, _ in service.AGE_BUCKETS],
        locked=locked_planned(ALL_SITES),
    )
