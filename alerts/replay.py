"""Choosing what a replay does (api.md, Replay). Pure: the flow's facts, what the store knows about
earlier replays and conflicts, and ``now`` come in; a plan or a refusal comes out.

Guardrails, in the order they are checked (each refusal is answered with 409 and its reason):
``not_stuck``; ``not_on_integration_failure`` (unless an admin forces it); ``in_progress`` (a
replay of the flow is being sent); ``too_many_replays`` (the limit per flow and period, refused
replays not counted); ``invoice_against_outdated_terms`` (an amendment flow with an open
``amendment_conflict`` finding: that is finance_ops' to settle); ``no_failure_event`` (nothing
names the middleware execution to run again); ``no_target`` (no replay target for that middleware
source); ``no_execution_id`` (the target needs one and the failure event had none)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.replay_settings import ReplayTarget
from probes.evaluate import AMENDMENT, FlowFacts, IntegrationMark, StageFacts


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    stage: str | None = None


@dataclass(frozen=True)
class Plan:
    """What to replay: the stuck stage and the latest failure event for it (as of now)."""

    stage: str
    failure: IntegrationMark

    @property
    def source(self) -> str:
        return self.failure.source


@dataclass(frozen=True)
class History:
    """What the store knows about the flow besides its facts."""

    recent_replays: int  # replays not refused, requested within the per-flow period
    in_progress: bool  # a replay of the flow is being sent now
    open_amendment_conflict: bool  # an open amendment_conflict finding of the flow


def latest_failure(stage: StageFacts, now: datetime) -> IntegrationMark | None:
    """The latest ``integration.failed`` or ``integration.dead_lettered`` for the stage by now."""
    latest = None
    for mark in stage.integration:
        if mark.time > now:
            break
        if mark.failed:
            latest = mark
    return latest


def plan(
    facts: FlowFacts,
    now: datetime,
    history: History,
    targets: dict[str, ReplayTarget],
    *,
    force: bool = False,
    max_per_flow: int = 3,
    per_flow_period: timedelta = timedelta(hours=24),
) -> Plan | Refusal:
    stage = facts.stuck_stage(now)
    if stage is None:
        state = "complete" if facts.complete(now) else "cancelled" if facts.cancelled(now) else ""
        detail = f"it is {state}" if state else "no stage is past its deadline unreached"
        return Refusal("not_stuck", f"flow {facts.flow_id} is not stuck: {detail}")
    if not stage.failing(now) and not force:
        return Refusal(
            "not_on_integration_failure",
            f"flow {facts.flow_id} is stuck at {stage.type}, but not on an integration failure "
            f"(the latest middleware event for {stage.type} is not integration.failed or "
            f"integration.dead_lettered); its finding is in the {stage.queue} queue. An admin "
            "may force the replay.",
            stage.type,
        )
    if history.in_progress:
        return Refusal(
            "in_progress", f"a replay of flow {facts.flow_id} is being sent now", stage.type
        )
    if history.recent_replays >= max_per_flow:
        return Refusal(
            "too_many_replays",
            f"flow {facts.flow_id} was replayed {history.recent_replays} times in the last "
            f"{_period(per_flow_period)} (at most {max_per_flow}): look at the middleware first",
            stage.type,
        )
    if facts.flow_type == AMENDMENT and history.open_amendment_conflict:
        return Refusal(
            "invoice_against_outdated_terms",
            f"an invoice was posted against the outdated terms of amendment flow {facts.flow_id}: "
            "replaying would not correct it; the amendment_conflict finding is finance_ops' to "
            "settle",
            stage.type,
        )
    failure = latest_failure(stage, now)
    if failure is None:
        return Refusal(
            "no_failure_event",
            f"no integration.failed or integration.dead_lettered event for {stage.type} of flow "
            f"{facts.flow_id} names a middleware execution to run again",
            stage.type,
        )
    target = targets.get(failure.source)
    if target is None:
        return Refusal(
            "no_target",
            f"no replay target is configured for the middleware source {failure.source!r} "
            f"(replay.targets.{failure.source} in the configuration)",
            stage.type,
        )
    if failure.execution_id is None and _needs_execution_id(target):
        return Refusal(
            "no_execution_id",
            f"the failure event {failure.event_id} for {stage.type} carries no execution_id, "
            f"which the replay target of {failure.source!r} needs",
            stage.type,
        )
    return Plan(stage.type, failure)


def _needs_execution_id(target: ReplayTarget) -> bool:
    if target.http is not None:
        return "execution_id" in target.http.needs()
    return False  # a broker re-publishes the original event


def _period(period: timedelta) -> str:
    hours = period.total_seconds() / 3600
    return f"{hours:g} h"


def follow_up(
    facts: FlowFacts, stage: str, now: datetime, until: datetime
) -> tuple[str, datetime | None] | None:
    """``("effective", reached_at)`` once the flow has reached the replayed stage (or completed),
    ``("ineffective", None)`` when it has not by ``until`` or was cancelled; None: wait.

    Judged as of ``min(now, until)``: a stage reached only after the window makes the replay
    ineffective, however late the follow-up runs."""
    at = min(now, until)
    for candidate in facts.stages:
        if candidate.type == stage and candidate.reached(at):
            return "effective", candidate.reached_at
    if facts.complete(at):
        return "effective", facts.completed_at
    if facts.cancelled(at) or now >= until:
        return "ineffective", None
    return None


def fill(template: str, values: dict[str, str]) -> str:
    """A configured template (checked at start-up: only known placeholders) with the values."""
    return template.format_map(values)


def fill_body(body: Any, values: dict[str, str]) -> bytes | None:
    if body is None:
        return None

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return fill(value, values)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return json.dumps(walk(body), separators=(",", ":")).encode()
