"""The simulated AI report generator (slow, logged, optionally faulty) and the report model."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from refapp import db

Fault = Literal["broken_json", "zero_risk"]


class Report(BaseModel):
    """What a report must look like; the `report` quality gate is this model's JSON Schema."""

    store_id: int
    risk_score: float = Field(gt=0, le=10)
    summary: str = Field(min_length=1)
    factors: list[str]
    generation_id: int
    epoch: int
    generated_at: float


def report_key(store_id: int) -> str:
    return f"report:{store_id}"


def report_tags(store_id: int) -> list[str]:
    return [f"store:{store_id}", "reports"]


class Generated:
    """One finished generation: the JSON text, and the epoch it was computed under."""

    def __init__(self, body: str, epoch: int, generation_id: int) -> None:
        self.body = body
        self.epoch = epoch
        self.generation_id = generation_id


async def generate(pool: Any, store_id: int, delay: float, fault: Fault | None = None) -> Generated | None:
    """Generate a store's risk report: ~``delay`` seconds of "AI", logged in ``computations``.

    None when the store does not exist. ``fault`` makes the model misbehave the way the
    real one does (truncated JSON, a risk score of 0)."""
    # The inputs and the epoch are read before the computation is logged as running: a
    # reset seen after that row exists is always newer than this generation's epoch.
    row, epoch = await db.store_inputs(pool, store_id)
    cid = await db.computation_start(pool, "report", str(store_id))
    try:
        if row is None:
            await db.computation_end(pool, cid, "no-such-store")
            return None
        await asyncio.sleep(delay)
        days = max(int(row["days"]), 1)
        incident_rate = int(row["incidents"]) / days
        refund_rate = int(row["refunds"]) / days
        score = round(min(10.0, 1.0 + 40 * incident_rate + 0.8 * refund_rate), 2)
        factors = []
        if incident_rate > 0.05:
            factors.append(f"incidents on {incident_rate:.0%} of days")
        if refund_rate > 3:
            factors.append(f"{refund_rate:.1f} refunds a day")
        factors.append(f"daily revenue {float(row['daily']):.0f}")
        report: dict[str, Any] = {
            "store_id": store_id,
            "risk_score": 0 if fault == "zero_risk" else score,
            "summary": f"{row['name']} ({row['region']}): risk {score}/10 over {days} days",
            "factors": factors,
            "generation_id": cid,
            "epoch": epoch,
            "generated_at": time.time(),
        }
        body = json.dumps(report, separators=(",", ":"))
        if fault == "broken_json":
            body = body[: len(body) // 2]  # the model stopped mid-answer
        await db.computation_end(pool, cid, "done")
        return Generated(body, epoch, cid)
    except BaseException:
        await asyncio.shield(db.computation_end(pool, cid, "failed"))
        raise

