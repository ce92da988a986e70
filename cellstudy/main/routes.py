"""Home page: the user's sites at a glance."""

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select

from ..auth.models import Site
from ..adverse_events.service import sae_worklist
from ..auth.policy import can, require, scoped, user_sites
from ..enrollment.models import SUBJECT_STATUSES, Subject
from ..extensions import db
from ..infusions.judgement import locked_planned
from ..enrollment.reconfirm import open_reviews

bp = Blueprint("main", __name__)


@bp.route("/")
@require(None)
def index():
    if not can("view_clinical"):
        return redirect(url_for("auth.users")) if can("manage_users") else render_template("main/index.html", rows=[])
    stmt = scoped(
        select(Site.code, Site.name, Subject.status, func.count(Subject.id)).join(Subject, Subject.site_id == Site.id),
        Subject.site_id,
        user_sites(),
    ).group_by(Site.code, Site.name, Subject.status)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for code, name, status, n in db.session.execute(stmt):
        counts.setdefault((code, name), {})[status] = n
    rows = [
        {"code": code, "name": name, "counts": c, "total": sum(c.values())}
        for (code, name), c in sorted(counts.items())
    ]
    # SAE reports due or overdue (and SUSAR reports) at the user's sites: the site dashboard
    saes = [
        r
        for r in sae_worklist(user_sites())
        if r["sae"]["state"] in ("due", "overdue") or (r["susar"] and r["susar"]["state"] in ("due", "overdue"))
    ]
    # planned infusions whose stored judgement is now locked: coordinators and investigators of the site
    locked = locked_planned(user_sites()) if can("enter_data") else None
    # enrolled subjects whose eligibility is to be re-confirmed: the site's investigators (issue 11)
    reviews_to_confirm = open_reviews(user_sites()) if can("sign_eligibility") else None
    return render_template(
        "main/index.html",
        rows=rows,
        statuses=SUBJECT_STATUSES,
        user=current_user,
        saes=saes,
        locked=locked,
        reviews_to_confirm=reviews_to_confirm,
    )
