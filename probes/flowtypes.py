"""Flow types (``spec/flows.md``): declared in configuration, with the three defaults below.

A flow type starts at a start event (optionally only when a data field of it has a given value),
takes an optional sub-key from a data field (one flow per correlation ID and sub-key), and has
stages in order, each with a deadline from T0 and the queue that owns it when it is missed. The
last stage is the final stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core import durations
from core.errors import ConfigError

QUEUES = ("finance_ops", "legal_ops", "pmo", "integration_oncall")


@dataclass(frozen=True)
class Stage:
    type: str
    deadline: timedelta  # from T0
    queue: str  # owns the stuck finding when the stage is missed (unless integration_oncall)


@dataclass(frozen=True)
class FlowType:
    name: str
    start: str  # the start event type
    stages: tuple[Stage, ...]
    #: data field of the start event (and of stage events) that splits flows of a correlation ID
    key: str | None = None
    #: data fields the start event must have with these values (e.g. subcontract: true)
    when: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def deadline(self) -> timedelta:
        """The flow's deadline from T0: the final stage's."""
        return self.final.deadline

    def stage(self, event_type: str) -> Stage | None:
        for stage in self.stages:
            if stage.type == event_type:
                return stage
        return None


def _stage(event_type: str, hours: int, queue: str) -> Stage:
    return Stage(event_type, timedelta(hours=hours), queue)


DEFAULT_FLOW_TYPES: tuple[FlowType, ...] = (
    FlowType(
        name="contract_onboarding",
        start="contract.signed",
        stages=(
            _stage("customer.synced", 4, "finance_ops"),
            _stage("project.created", 24, "pmo"),
            _stage("billing_plan.created", 48, "finance_ops"),
            _stage("project.activated", 72, "pmo"),
        ),
    ),
    FlowType(
        name="amendment_propagation",
        start="contract.amended",
        key="amendment_id",
        stages=(_stage("billing_plan.updated", 24, "finance_ops"),),
    ),
    FlowType(
        name="milestone_billing",
        start="milestone.completed",
        key="milestone_id",
        stages=(_stage("invoice.posted", 120, "finance_ops"),),
    ),
)


def parse_duration(value: Any, where: str) -> timedelta:
    """``"4h"``, ``"2d"``, ``"90m"``, ``"1w"``, or a number of seconds."""
    try:
        return durations.parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_flow_types(config: Mapping[str, Any]) -> tuple[FlowType, ...]:
    """Flow types from the ``flows`` section of the YAML file; raises ConfigError naming the key."""
    result = []
    for name, spec in config.items():
        where = f"flows.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        unknown = set(spec) - {"start", "key", "when", "stages"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown setting")
        start = spec.get("start")
        if not isinstance(start, str) or not start:
            raise ConfigError(f"{where}.start: the start event type is required")
        key = spec.get("key")
        if key is not None and not isinstance(key, str):
            raise ConfigError(f"{where}.key: must be a data field name")
        when = spec.get("when") or {}
        if not isinstance(when, Mapping):
            raise ConfigError(f"{where}.when: must be a mapping of data fields to values")
        stages_spec = spec.get("stages")
        if not isinstance(stages_spec, list) or not stages_spec:
            raise ConfigError(f"{where}.stages: at least one stage is required")
        stages = []
        for index, stage_spec in enumerate(stages_spec):
            stage_where = f"{where}.stages[{index}]"
            if not isinstance(stage_spec, Mapping):
                raise ConfigError(f"{stage_where}: must be a mapping with type, deadline, queue")
            unknown = set(stage_spec) - {"type", "deadline", "queue"}
            if unknown:
                raise ConfigError(f"{stage_where}.{sorted(unknown)[0]}: unknown setting")
            event_type = stage_spec.get("type")
            if not isinstance(event_type, str) or not event_type:
                raise ConfigError(f"{stage_where}.type: the stage's event type is required")
            queue = stage_spec.get("queue", "finance_ops")
            if queue not in QUEUES:
                raise ConfigError(f"{stage_where}.queue: must be one of {', '.join(QUEUES)}")
            deadline = parse_duration(stage_spec.get("deadline"), f"{stage_where}.deadline")
            stages.append(Stage(event_type, deadline, queue))
        if [s.deadline for s in stages] != sorted(s.deadline for s in stages):
            raise ConfigError(f"{where}.stages: deadlines must not decrease along the stages")
        if len({s.type for s in stages}) != len(stages):
            raise ConfigError(f"{where}.stages: a stage type appears twice")
        result.append(FlowType(name, start, tuple(stages), key, dict(when)))
    return tuple(result)


def configured_flow_types(config: Mapping[str, Any] | None) -> tuple[FlowType, ...]:
    """The flow types in force: the defaults, changed by the ``flows`` section of the configuration.

    An entry with the name of a default replaces it; ``null`` removes it; a new name adds a flow
    type. To change only deadlines, an entry may give ``deadlines: {stage type: duration}``."""
    if not config:
        return DEFAULT_FLOW_TYPES
    if not isinstance(config, Mapping):
        raise ConfigError("flows: must be a mapping of flow type names to definitions")
    by_name = {flow_type.name: flow_type for flow_type in DEFAULT_FLOW_TYPES}
    definitions: dict[str, Any] = {}
    for name, spec in config.items():
        if spec is None:
            if name not in by_name:
                raise ConfigError(
                    f"flows.{name}: null removes a default flow type; none has this name"
                )
            del by_name[name]
        elif isinstance(spec, Mapping) and set(spec) == {"deadlines"}:
            by_name[name] = _with_deadlines(by_name.get(name), name, spec["deadlines"])
        else:
            definitions[name] = spec
    by_name.update({flow_type.name: flow_type for flow_type in parse_flow_types(definitions)})
    if not by_name:
        raise ConfigError("flows: at least one flow type must remain")
    return tuple(by_name.values())


def _with_deadlines(base: FlowType | None, name: str, deadlines: Any) -> FlowType:
    where = f"flows.{name}.deadlines"
    if base is None:
        raise ConfigError(f"{where}: only changes a default flow type; define {name} in full")
    if not isinstance(deadlines, Mapping):
        raise ConfigError(f"{where}: must map stage types to durations")
    stages = list(base.stages)
    for stage_type, value in deadlines.items():
        index = next((i for i, s in enumerate(stages) if s.type == stage_type), None)
        if index is None:
            raise ConfigError(f"{where}.{stage_type}: {name} has no such stage")
        stages[index] = Stage(
            stage_type, parse_duration(value, f"{where}.{stage_type}"), stages[index].queue
        )
    if [s.deadline for s in stages] != sorted(s.deadline for s in stages):
        raise ConfigError(f"{where}: deadlines must not decrease along the stages")
    return FlowType(base.name, base.start, tuple(stages), base.key, base.when)
