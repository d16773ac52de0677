"""Declares the scheduler's knobs once, with their defaults, and builds the checked configuration.

Every timing is in seconds and named so. :class:`SchedulerKnobs` and :class:`ConfigKnobs` name
and type the knobs; :data:`KNOB_DEFAULTS` pairs each with its default, taken from the module
constants (``<THING>_DEFAULT``); ``Scheduler`` and the ``pg-scheduler run`` options read them
from there. Values that are not given as keyword arguments fall back to the 0.1 README's
environment variables (``MAX_CONCURRENT_JOBS``, ``MISFIRE_GRACE_TIME``, ``VACUUM_ENABLED``), then
to the default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypedDict, Unpack

from .errors import ConfigurationError
from .models import UNSET, PollingConfig, VacuumConfig, _Unset
from .queues import parse_queues

MAX_CONCURRENT_JOBS_DEFAULT = 25
MISFIRE_GRACE_TIME_DEFAULT = 300.0
BATCH_CLAIM_LIMIT_DEFAULT = 100
LEASE_SECONDS_DEFAULT = 30.0
RETRY_DELAY_SECONDS_DEFAULT = 10.0
RETRY_MAX_DELAY_SECONDS_DEFAULT = 600.0
SHUTDOWN_TIMEOUT_SECONDS_DEFAULT = 30.0
LEADER_TTL_SECONDS_DEFAULT = 15.0
PERIODIC_INTERVAL_SECONDS_DEFAULT = 1.0
MISFIRE_TOLERANCE_SECONDS_DEFAULT = 1.0
"""Lateness up to this never counts as a misfire: it covers the scheduler's own pickup time, so a
healthy scheduler never expires a job with a small grace."""
VACUUM_ENABLED_DEFAULT = True
RETRY_JITTER_DEFAULT = True
INSTALL_SIGNAL_HANDLERS_DEFAULT = False
ELECT_INTERVAL_SECONDS_MAX = 5.0
"""The election period when not given: a third of the leader TTL, at most this."""
RESCUE_INTERVAL_SECONDS_MAX = 5.0
"""The orphan rescuer's period when not given: a third of the lease, at most this."""


RESULT_MAX_BYTES_DEFAULT: Final = 1 << 20
"""1 MiB: a job's stored result is for a summary or an id, not for bulk data (put that in a
table or a bucket and return where it is)."""


class SchedulerKnobs(TypedDict, total=False):
    """The ``Scheduler``'s keyword-only knobs (their defaults: :data:`KNOB_DEFAULTS`)."""

    lease_seconds: float
    """A running job's lease; a crashed worker's job runs again after it."""
    heartbeat_seconds: float | None
    """Lease renewal period (default: lease / 3), from its own thread."""
    poll_interval_seconds: float | None
    """Fallback poll when no notification arrives."""
    retry_delay_seconds: float
    """First retry delay; doubles each retry, up to ``retry_max_delay_seconds``."""
    retry_max_delay_seconds: float
    """Cap of the retry delay."""
    retry_jitter: bool
    """Each retry delay drawn within [delay / 2, delay] (equal jitter)."""
    shutdown_timeout_seconds: float
    """How long ``shutdown()`` waits for running jobs before handing their leases back."""
    install_signal_handlers: bool
    """Whether the Scheduler handles SIGTERM/SIGINT itself; signals belong to the host program
    by default."""
    leader_ttl_seconds: float
    elect_interval_seconds: float | None
    rescue_interval_seconds: float | None
    worker_stale_seconds: float | None
    periodic_interval_seconds: float
    queues: str | Iterable[str] | None
    """The queues this process claims jobs from (``["emails"]`` or ``"emails,reports"``); None,
    every queue."""
    result_max_bytes: int
    """The largest return value a job may store, as JSON bytes; a larger one fails the attempt."""


class ConfigKnobs(SchedulerKnobs, total=False):
    """Every knob :meth:`SchedulerConfig.build` takes: the ``Scheduler``'s keyword-only ones, the
    positional ones of 0.2.3's constructor, and those only the configuration takes."""

    max_concurrent_jobs: int | None
    misfire_grace_time: float | None | _Unset
    vacuum_enabled: bool | None
    vacuum_config: VacuumConfig | None
    batch_claim_limit: int
    polling_config: PollingConfig | None
    misfire_tolerance_seconds: float


KNOB_DEFAULTS: Final[ConfigKnobs] = {
    # Environment variable first (see the module's docstring), then this.
    "max_concurrent_jobs": MAX_CONCURRENT_JOBS_DEFAULT,
    "misfire_grace_time": MISFIRE_GRACE_TIME_DEFAULT,
    "vacuum_enabled": VACUUM_ENABLED_DEFAULT,
    # A new VacuumConfig() and PollingConfig().
    "vacuum_config": None,
    "polling_config": None,
    "batch_claim_limit": BATCH_CLAIM_LIMIT_DEFAULT,
    "lease_seconds": LEASE_SECONDS_DEFAULT,
    "retry_delay_seconds": RETRY_DELAY_SECONDS_DEFAULT,
    "retry_max_delay_seconds": RETRY_MAX_DELAY_SECONDS_DEFAULT,
    "retry_jitter": RETRY_JITTER_DEFAULT,
    "shutdown_timeout_seconds": SHUTDOWN_TIMEOUT_SECONDS_DEFAULT,
    "install_signal_handlers": INSTALL_SIGNAL_HANDLERS_DEFAULT,
    "leader_ttl_seconds": LEADER_TTL_SECONDS_DEFAULT,
    "periodic_interval_seconds": PERIODIC_INTERVAL_SECONDS_DEFAULT,
    "misfire_tolerance_seconds": MISFIRE_TOLERANCE_SECONDS_DEFAULT,
    # Every queue.
    "queues": None,
    "result_max_bytes": RESULT_MAX_BYTES_DEFAULT,
    # Derived from other knobs by SchedulerConfig.build: heartbeat lease / 3; poll the polling
    # config's max_interval; elect min(ELECT_INTERVAL_SECONDS_MAX, leader TTL / 3); rescue
    # min(RESCUE_INTERVAL_SECONDS_MAX, lease / 3); a worker is stale after one lease.
    "heartbeat_seconds": None,
    "poll_interval_seconds": None,
    "elect_interval_seconds": None,
    "rescue_interval_seconds": None,
    "worker_stale_seconds": None,
}
"""Each knob's default: the one place that pairs a knob with it."""

SCHEDULER_KNOBS: Final = SchedulerKnobs.__optional_keys__
"""The names :class:`SchedulerKnobs` declares, for the runtime check of a caller's keywords."""


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None


def _env_float_or_none(env: Mapping[str, str], name: str) -> float | None | _Unset:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return UNSET
    if raw.strip().lower() in ("none", "null", "never"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number (or 'none')") from None


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class SchedulerConfig:
    """The checked, resolved knobs; build it with :meth:`build`, which applies the defaults."""

    max_concurrent_jobs: int
    misfire_grace_time: float | None
    vacuum_enabled: bool
    vacuum_config: VacuumConfig
    batch_claim_limit: int
    polling_config: PollingConfig
    lease_seconds: float
    heartbeat_seconds: float
    poll_interval_seconds: float
    retry_delay_seconds: float
    retry_max_delay_seconds: float
    retry_jitter: bool
    shutdown_timeout_seconds: float
    install_signal_handlers: bool
    leader_ttl_seconds: float
    elect_interval_seconds: float
    rescue_interval_seconds: float
    worker_stale_seconds: float
    periodic_interval_seconds: float
    misfire_tolerance_seconds: float
    queues: tuple[str, ...] | None = None
    """The queues claimed from, each once; None: every queue."""
    result_max_bytes: int = RESULT_MAX_BYTES_DEFAULT

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")

        for name in (
            "max_concurrent_jobs",
            "batch_claim_limit",
            "lease_seconds",
            "heartbeat_seconds",
            "poll_interval_seconds",
            "leader_ttl_seconds",
            "elect_interval_seconds",
            "rescue_interval_seconds",
            "worker_stale_seconds",
            "periodic_interval_seconds",
            "result_max_bytes",
        ):
            positive(name)
        for name in (
            "retry_delay_seconds",
            "retry_max_delay_seconds",
            "shutdown_timeout_seconds",
            "misfire_tolerance_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.max_concurrent_jobs, int):
            raise ConfigurationError("max_concurrent_jobs must be an int")
        if self.misfire_grace_time is not None and (
            isinstance(self.misfire_grace_time, bool) or self.misfire_grace_time < 0
        ):
            raise ConfigurationError(
                f"misfire_grace_time must be >= 0 or None, got {self.misfire_grace_time!r}"
            )
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ConfigurationError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than "
                f"lease_seconds ({self.lease_seconds}), or leases lapse between heartbeats"
            )
        if self.elect_interval_seconds >= self.leader_ttl_seconds:
            raise ConfigurationError("elect_interval_seconds must be shorter than leader_ttl_seconds")

    @classmethod
    def build(cls, *, env: Mapping[str, str] | None = None, **knobs: Unpack[ConfigKnobs]) -> SchedulerConfig:
        """The configuration from ``knobs``; a knob not given takes its environment variable
        (for the three of 0.1's README), else its :data:`KNOB_DEFAULTS` entry."""
        unknown = knobs.keys() - KNOB_DEFAULTS.keys()
        if unknown:
            raise TypeError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        env = os.environ if env is None else env
        k: ConfigKnobs = {**KNOB_DEFAULTS, **knobs}
        max_concurrent_jobs = knobs.get("max_concurrent_jobs")
        if max_concurrent_jobs is None:
            from_env_int = _env_int(env, "MAX_CONCURRENT_JOBS")
            # "0" is a mistake to report, not a request for the default.
            if from_env_int is not None and from_env_int < 1:
                raise ConfigurationError(f"MAX_CONCURRENT_JOBS={from_env_int} must be at least 1")
            max_concurrent_jobs = (
                KNOB_DEFAULTS["max_concurrent_jobs"] if from_env_int is None else from_env_int
            )
        misfire_grace_time = knobs.get("misfire_grace_time", UNSET)
        if misfire_grace_time is UNSET:
            from_env = _env_float_or_none(env, "MISFIRE_GRACE_TIME")
            misfire_grace_time = KNOB_DEFAULTS["misfire_grace_time"] if from_env is UNSET else from_env
        vacuum_enabled = knobs.get("vacuum_enabled")
        if vacuum_enabled is None:
            vacuum_enabled = _env_bool(env, "VACUUM_ENABLED")
            vacuum_enabled = KNOB_DEFAULTS["vacuum_enabled"] if vacuum_enabled is None else vacuum_enabled
        polling = k["polling_config"] or PollingConfig()
        lease_seconds = k["lease_seconds"]
        leader_ttl_seconds = k["leader_ttl_seconds"]
        assert max_concurrent_jobs is not None and vacuum_enabled is not None
        assert not isinstance(misfire_grace_time, _Unset)
        return cls(
            max_concurrent_jobs=max_concurrent_jobs,
            misfire_grace_time=misfire_grace_time,
            vacuum_enabled=vacuum_enabled,
            vacuum_config=k["vacuum_config"] or VacuumConfig(),
            batch_claim_limit=k["batch_claim_limit"],
            polling_config=polling,
            lease_seconds=lease_seconds,
            heartbeat_seconds=k["heartbeat_seconds"] or lease_seconds / 3,
            poll_interval_seconds=k["poll_interval_seconds"] or polling.max_interval,
            retry_delay_seconds=k["retry_delay_seconds"],
            retry_max_delay_seconds=k["retry_max_delay_seconds"],
            retry_jitter=k["retry_jitter"],
            shutdown_timeout_seconds=k["shutdown_timeout_seconds"],
            install_signal_handlers=k["install_signal_handlers"],
            leader_ttl_seconds=leader_ttl_seconds,
            elect_interval_seconds=k["elect_interval_seconds"]
            or min(ELECT_INTERVAL_SECONDS_MAX, leader_ttl_seconds / 3),
            rescue_interval_seconds=k["rescue_interval_seconds"]
            or min(RESCUE_INTERVAL_SECONDS_MAX, lease_seconds / 3),
            worker_stale_seconds=k["worker_stale_seconds"] or lease_seconds,
            periodic_interval_seconds=k["periodic_interval_seconds"],
            misfire_tolerance_seconds=k["misfire_tolerance_seconds"],
            queues=parse_queues(k["queues"]),
            result_max_bytes=k["result_max_bytes"],
        )
