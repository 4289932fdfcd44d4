"""The saturation search both generators use, so TCP and UDP figures are found the same way.

``saturate(step, start, ...)`` offers ``start`` messages/s, multiplies the rate by ``growth``
after each passing step until one fails, then bisects geometrically between the highest
passing and the lowest failing rate until they are within ``resolution`` (or ``max_steps``
or the deadline is reached). ``step(rate)`` runs one step and returns a dict with ``ok``.
"""

from __future__ import annotations

import time


def saturate(step, start: float, growth: float = 2.0, resolution: float = 1.15,
             max_steps: int = 10, floor: float = 1.0, deadline: float | None = None,
             min_steps: int = 2) -> dict:
    """Search the highest passing rate; return every step, the best and the first failure.

    The first ``min_steps`` steps run even past the deadline, and up to three more while no
    step has both passed and failed yet, so a short budget still brackets the saturation.
    """
    steps: list[dict] = []
    best = None
    fail = None
    rate = start
    while len(steps) < max_steps:
        bracketed = best is not None and fail is not None
        if not (len(steps) < min_steps or deadline is None or time.monotonic() < deadline
                or (not bracketed and len(steps) < min_steps + 3)):
            break
        r = step(rate)
        r["rate"] = rate
        steps.append(r)
        if r["ok"]:
            if best is None or rate > best["rate"]:
                best = r
        else:
            fail = rate if fail is None else min(fail, rate)
        if r.get("abort"):
            break
        if fail is None:
            rate *= growth
        elif best is None:
            rate /= 4
            if rate < floor:
                break
        else:
            if fail / best["rate"] < resolution:
                break
            rate = (best["rate"] * fail) ** 0.5
    return {"steps": steps, "best": best, "first_fail_rate": fail}


def step_failures(*, short_in_grace: int, grace: float, short: int, short_by: int, over: int,
                  over_by: int, order_errors: int, closed: int, closed_what: str,
                  p99: float | None, max_p99: float, lag_s: float, duration: float) -> list[str]:
    """Why a step failed, one phrase per reason (empty: it passed), worded alike for every
    generator so the report reads the same for TCP and UDP."""
    why = []
    if short_in_grace:
        why.append("%d receivers short %.2fs after the offer" % (short_in_grace, grace))
    if short or over:
        why.append("exact count: %d short by %d, %d over by %d" % (short, short_by, over, over_by))
    if order_errors:
        why.append("%d order/duplicate errors on sampled receivers" % order_errors)
    if closed:
        why.append("%d %s" % (closed, closed_what))
    if p99 is None or p99 >= max_p99:
        why.append("probe p99 %s ms" % (None if p99 is None else round(p99, 2)))
    if lag_s > 0.1 * duration:
        why.append("generator fell %.0f ms behind its schedule" % (1000 * lag_s))
    return why
