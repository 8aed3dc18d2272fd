"""Automations: "if this, then that" rules that turn domain events into tasks (pure).

A rule watches one event type, checks a simple condition on the event and on the job it
concerns, and proposes one task. The built-in rules are declared in one place (``RULES``,
bottom of this module) through :func:`register_automation`, the door a new rule would use.

Guarantees:

* **No recursion.** Rules read events and return task rows; tasks are not events, and no rule
  may watch a ``task.*`` event (:func:`register_automation` refuses it), so an automation can
  never trigger another one.
* **Deterministic.** A task's id is ``uuid5(rule name + the event's identity)`` (record id, type,
  hybrid-logical-clock time, payload), and its due date is counted from the event's own time:
  replaying or restoring the same events proposes the same rows, and inserting them with
  ``ON CONFLICT (id) DO NOTHING`` (:func:`insert_tasks`) never duplicates a task.
* **Pure.** ``tasks_for`` reads only its arguments; the caller inserts the rows in the same
  transaction as the events (so a task exists exactly when its event does).

Wiring (inside the engine's commit transaction, after the events are inserted with their ids)::

    from syncd.automations import job_context, tasks_for, insert_tasks
    ctx = {live.record_id: job_context(new_views[d]) for d, live in touched.items() if live.kind == "job"}
    rows = tasks_for(list(zip(event_ids, events)), ctx)
    await insert_tasks(conn, rows)

Built-in rules (``RULES``):

* ``invoice_completed_job``: ``job.status_changed`` to ``completed`` -> "Invoice <title>", due in 3 days;
* ``assign_crew_when_scheduled``: a job moved to (or created as) ``scheduled`` with no crew ->
  "Assign a crew to <title>", due in 1 day;
* ``buy_material``: ``material.added``, not purchased, on a job ``in_progress`` ->
  "Buy <name> (<qty> <unit>) for <title>", due in 1 day;
* ``follow_up_on_hold``: ``job.status_changed`` to ``on_hold`` -> "Follow up on <title> (on hold)",
  due in 7 days.

No rule fires for a job that is deleted (in the context).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from .projection import Event

__all__ = [
    "AUTOMATION_NAMESPACE",
    "Automation",
    "TaskSpec",
    "RULES",
    "register_automation",
    "unregister_automation",
    "automation_names",
    "tasks_for",
    "task_id",
    "event_time",
    "job_context",
    "insert_tasks",
]

#: Namespace of task ids (uuid5): fixed forever, or replays would stop deduplicating.
AUTOMATION_NAMESPACE = uuid.UUID("6b1f3c52-9d0e-5a7b-8c41-2f6e0d9a7b13")
_TITLE_MAX = 200  # tasks.title


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a rule proposes: a title and how long after the event the task is due."""

    title: str
    due_in: timedelta | None = None


#: ``condition(event, job)``: job is the context row of the event's job (None if unknown).
Condition = Callable[[Event, Mapping[str, Any] | None], bool]
Action = Callable[[Event, Mapping[str, Any] | None], TaskSpec]


@dataclass(frozen=True, slots=True)
class Automation:
    """One rule: on any of the event types ``on``, if ``condition``, create ``action``'s task."""

    name: str
    on: tuple[str, ...]
    condition: Condition
    action: Action
    description: str = ""


_RULES: dict[str, Automation] = {}


def register_automation(rule: Automation) -> Automation:
    """Add a rule (its name must be new). Rules may not watch ``task.*`` events: tasks are
    never events, so automations never trigger automations."""
    if not rule.name or rule.name in _RULES:
        raise ValueError(f"automation {rule.name!r} is already registered (or has no name)")
    if isinstance(rule.on, str) or not rule.on:
        raise ValueError(f"automation {rule.name!r}: `on` must be a non-empty tuple of event types")
    for trigger in rule.on:
        if not trigger or trigger.startswith("task."):
            raise ValueError(f"automation {rule.name!r}: {trigger!r} is not a domain event "
                             "(automations never react to tasks)")
    _RULES[rule.name] = rule
    return rule


def unregister_automation(name: str) -> None:
    _RULES.pop(name, None)


def automation_names() -> list[str]:
    return list(_RULES)


# --- helpers ------------------------------------------------------------------------------------

def event_time(e: Event) -> datetime | None:
    """The wall-clock part of an event's hybrid logical clock time (UTC), or None."""
    if not e.ts:
        return None
    try:
        wall_ms = int(e.ts.split(".", 1)[0])
    except ValueError:
        return None
    return datetime.fromtimestamp(wall_ms / 1000, tz=timezone.utc)


def task_id(rule: str, e: Event) -> str:
    """Deterministic task id: the rule and the event's identity (record, type, time, payload)."""
    payload = orjson.dumps(e.payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()
    return str(uuid.uuid5(AUTOMATION_NAMESPACE, "\x1f".join((rule, e.record_type, e.record_id, e.type,
                                                              e.ts or "", payload))))


def _job_id(e: Event) -> str | None:
    if e.record_type == "job":
        return e.record_id
    jid = e.payload.get("job_id") if isinstance(e.payload, Mapping) else None
    return jid if isinstance(jid, str) else None


def job_context(view: Any) -> dict[str, Any]:
    """The context row of one job from its resolved view (``schema.view.DocView``):
    ``{"title", "status", "crew", "deleted"}``."""
    rec = getattr(view, "record", None) or {}
    return {"title": rec.get("title"), "status": rec.get("status"), "crew": list(rec.get("crew") or ()),
            "deleted": bool(rec.get("deleted"))}


def _title(job: Mapping[str, Any] | None) -> str:
    t = (job or {}).get("title")
    return t if isinstance(t, str) and t.strip() else "untitled job"


def _clip(s: str) -> str:
    return s if len(s) <= _TITLE_MAX else s[:_TITLE_MAX - 1] + "…"


def _new_status(e: Event) -> Any:
    """The status an event moves a job to: ``job.status_changed`` "to", ``job.created`` "status"."""
    if e.type == "job.status_changed":
        return e.payload.get("to")
    if e.type == "job.created":
        return e.payload.get("status")
    return None


def _status_to(status: str) -> Condition:
    return lambda e, job: _new_status(e) == status


def _fmt_qty(q: Any) -> str:
    if isinstance(q, float) and q.is_integer():
        return str(int(q))
    return str(q)


def _buy_title(e: Event, job: Mapping[str, Any] | None) -> TaskSpec:
    name = e.payload.get("name") or "material"
    q, unit = e.payload.get("quantity"), e.payload.get("unit")
    amount = " ".join(x for x in (_fmt_qty(q) if q is not None else "", unit or "") if x)
    return TaskSpec(f"Buy {name}" + (f" ({amount})" if amount else "") + f" for {_title(job)}", timedelta(days=1))


# --- the engine -----------------------------------------------------------------------------------

def tasks_for(events: Iterable[tuple[int | None, Event]], context: Mapping[str, Mapping[str, Any]], *,
              now: datetime | None = None) -> list[dict[str, Any]]:
    """The task rows the registered automations create for these events.

    ``events``: (events.id, Event) pairs in commit order (the id becomes
    ``tasks.source_event_id``; None if unknown). ``context``: job id -> that job's row after
    the commit (``job_context``: title, status, crew list, deleted). ``now``: ``created_at``
    of the rows (default: the current time); the due date is counted from the event's time
    (``now`` if it has none).

    Returns rows for ``schema.tables.tasks`` (id, job_id, title, due_at, done, source_event_id,
    created_at), at most one per (rule, event), in event order then rule order.
    """
    now = now or datetime.now(timezone.utc)
    rules_by_trigger: dict[str, list[Automation]] = {}
    for rule in _RULES.values():
        for trigger in rule.on:
            rules_by_trigger.setdefault(trigger, []).append(rule)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event_id, e in events:
        rules = rules_by_trigger.get(e.type)
        if not rules:
            continue
        jid = _job_id(e)
        job = context.get(jid) if jid else None
        if job is not None and job.get("deleted"):
            continue
        for rule in rules:
            if not rule.condition(e, job):
                continue
            tid = task_id(rule.name, e)
            if tid in seen:
                continue
            seen.add(tid)
            spec = rule.action(e, job)
            base = event_time(e) or now
            out.append({"id": tid, "job_id": jid, "title": _clip(spec.title),
                        "due_at": base + spec.due_in if spec.due_in is not None else None, "done": False,
                        "source_event_id": event_id, "created_at": now})
    return out


async def insert_tasks(conn: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Insert task rows, skipping ids that exist (replays); return how many were given."""
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    from schema import tables as t
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(insert(t.tasks).on_conflict_do_nothing(index_elements=[t.tasks.c.id]), list(rows))
    return len(rows)


# --- the built-in rules: declared here, in one place ------------------------------------------------

RULES: tuple[Automation, ...] = tuple(register_automation(r) for r in (
    Automation(
        "invoice_completed_job", ("job.status_changed",), _status_to("completed"),
        lambda e, job: TaskSpec(f"Invoice {_title(job)}", timedelta(days=3)),
        "a job is completed: invoice it within 3 days"),
    Automation(
        "assign_crew_when_scheduled", ("job.status_changed", "job.created"),
        lambda e, job: _new_status(e) == "scheduled" and job is not None and not job.get("crew"),
        lambda e, job: TaskSpec(f"Assign a crew to {_title(job)}", timedelta(days=1)),
        "a job is scheduled but nobody is assigned: assign a crew"),
    Automation(
        "buy_material", ("material.added",),
        lambda e, job: not e.payload.get("purchased") and job is not None and job.get("status") == "in_progress",
        _buy_title,
        "a material is added, not bought, to a job in progress: buy it"),
    Automation(
        "follow_up_on_hold", ("job.status_changed",), _status_to("on_hold"),
        lambda e, job: TaskSpec(f"Follow up on {_title(job)} (on hold)", timedelta(days=7)),
        "a job is put on hold: follow up within a week"),
))
