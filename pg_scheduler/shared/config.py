"""The knobs 0.2.3 hard-coded, with their defaults, validation and environment variables.

Every timing is in seconds and named so. Defaults are module constants (``<THING>_DEFAULT``).
Values that are not given as keyword arguments fall back to the 0.1 README's environment variables
(``MAX_CONCURRENT_JOBS``, ``MISFIRE_GRACE_TIME``, ``VACUUM_ENABLED``), then to the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigurationError
from .models import UNSET, PollingConfig, VacuumConfig, _Unset

MAX_CONCURRENT_JOBS_DEFAULT = 25
MISFIRE_GRACE_TIME_DEFAULT = 300.0
BATCH_CLAIM_LIMIT_DEFAULT = 100
LEASE_SECONDS_DEFAULT = 30.0
RETRY_DELAY_SECONDS_DEFAULT = 10.0
RETRY_MAX_DELAY_SECONDS_DEFAULT = 600.0
SHUTDOWN_TIMEOUT_SECONDS_DEFAULT = 30.0
LEADER_TTL_SECONDS_DEFAULT = 15.0
ELECT_INTERVAL_SECONDS_DEFAULT = 5.0
PERIODIC_INTERVAL_SECONDS_DEFAULT = 1.0
MISFIRE_TOLERANCE_SECONDS_DEFAULT = 1.0
"""Lateness up to this never counts as a misfire: it covers the scheduler's own pickup time, so a
healthy scheduler never expires a job with a small grace (0.2.3 expired 6 of 10 with grace=1)."""


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
    max_concurrent_jobs: int = MAX_CONCURRENT_JOBS_DEFAULT
    misfire_grace_time: float | None = MISFIRE_GRACE_TIME_DEFAULT
    vacuum_enabled: bool = True
    vacuum_config: VacuumConfig = field(default_factory=VacuumConfig)
    batch_claim_limit: int = BATCH_CLAIM_LIMIT_DEFAULT
    polling_config: PollingConfig = field(default_factory=PollingConfig)
    lease_seconds: float = LEASE_SECONDS_DEFAULT
    heartbeat_seconds: float = LEASE_SECONDS_DEFAULT / 3
    poll_interval_seconds: float = 2.0
    retry_delay_seconds: float = RETRY_DELAY_SECONDS_DEFAULT
    retry_max_delay_seconds: float = RETRY_MAX_DELAY_SECONDS_DEFAULT
    retry_jitter: bool = True
    shutdown_timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS_DEFAULT
    install_signal_handlers: bool = False
    leader_ttl_seconds: float = LEADER_TTL_SECONDS_DEFAULT
    elect_interval_seconds: float = ELECT_INTERVAL_SECONDS_DEFAULT
    rescue_interval_seconds: float = 5.0
    worker_stale_seconds: float = LEASE_SECONDS_DEFAULT
    periodic_interval_seconds: float = PERIODIC_INTERVAL_SECONDS_DEFAULT
    misfire_tolerance_seconds: float = MISFIRE_TOLERANCE_SECONDS_DEFAULT

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")

        for name in (
            "max_concurrent_jobs", "batch_claim_limit", "lease_seconds", "heartbeat_seconds",
            "poll_interval_seconds", "leader_ttl_seconds", "elect_interval_seconds",
            "rescue_interval_seconds", "worker_stale_seconds", "periodic_interval_seconds",
        ):
            positive(name)
        for name in ("retry_delay_seconds", "retry_max_delay_seconds", "shutdown_timeout_seconds",
                     "misfire_tolerance_seconds"):
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
    def build(
        cls,
        *,
        max_concurrent_jobs: int | None = None,
        misfire_grace_time: float | None | _Unset = UNSET,
        vacuum_enabled: bool | None = None,
        vacuum_config: VacuumConfig | None = None,
        batch_claim_limit: int = BATCH_CLAIM_LIMIT_DEFAULT,
        polling_config: PollingConfig | None = None,
        lease_seconds: float = LEASE_SECONDS_DEFAULT,
        heartbeat_seconds: float | None = None,
        poll_interval_seconds: float | None = None,
        retry_delay_seconds: float = RETRY_DELAY_SECONDS_DEFAULT,
        retry_max_delay_seconds: float = RETRY_MAX_DELAY_SECONDS_DEFAULT,
        retry_jitter: bool = True,
        shutdown_timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS_DEFAULT,
        install_signal_handlers: bool = False,
        leader_ttl_seconds: float = LEADER_TTL_SECONDS_DEFAULT,
        elect_interval_seconds: float | None = None,
        rescue_interval_seconds: float | None = None,
        worker_stale_seconds: float | None = None,
        periodic_interval_seconds: float = PERIODIC_INTERVAL_SECONDS_DEFAULT,
        misfire_tolerance_seconds: float = MISFIRE_TOLERANCE_SECONDS_DEFAULT,
        env: Mapping[str, str] | None = None,
    ) -> SchedulerConfig:
        env = os.environ if env is None else env
        if max_concurrent_jobs is None:
            from_env_int = _env_int(env, "MAX_CONCURRENT_JOBS")
            # "0" is a mistake to report, not a request for the default (``or`` turned it into 25).
            if from_env_int is not None and from_env_int < 1:
                raise ConfigurationError(f"MAX_CONCURRENT_JOBS={from_env_int} must be at least 1")
            max_concurrent_jobs = (
                MAX_CONCURRENT_JOBS_DEFAULT if from_env_int is None else from_env_int
            )
        if misfire_grace_time is UNSET:
            from_env = _env_float_or_none(env, "MISFIRE_GRACE_TIME")
            misfire_grace_time = MISFIRE_GRACE_TIME_DEFAULT if from_env is UNSET else from_env
        if vacuum_enabled is None:
            vacuum_enabled = _env_bool(env, "VACUUM_ENABLED")
            vacuum_enabled = True if vacuum_enabled is None else vacuum_enabled
        polling = polling_config or PollingConfig()
        assert not isinstance(misfire_grace_time, _Unset)
        return cls(
            max_concurrent_jobs=max_concurrent_jobs,
            misfire_grace_time=misfire_grace_time,
            vacuum_enabled=vacuum_enabled,
            vacuum_config=vacuum_config or VacuumConfig(),
            batch_claim_limit=batch_claim_limit,
            polling_config=polling,
            lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds or lease_seconds / 3,
            poll_interval_seconds=poll_interval_seconds or polling.max_interval,
            retry_delay_seconds=retry_delay_seconds,
            retry_max_delay_seconds=retry_max_delay_seconds,
            retry_jitter=retry_jitter,
            shutdown_timeout_seconds=shutdown_timeout_seconds,
            install_signal_handlers=install_signal_handlers,
            leader_ttl_seconds=leader_ttl_seconds,
            elect_interval_seconds=elect_interval_seconds or min(
                ELECT_INTERVAL_SECONDS_DEFAULT, leader_ttl_seconds / 3
            ),
            rescue_interval_seconds=rescue_interval_seconds or min(5.0, lease_seconds / 3),
            worker_stale_seconds=worker_stale_seconds or lease_seconds,
            periodic_interval_seconds=periodic_interval_seconds,
            misfire_tolerance_seconds=misfire_tolerance_seconds,
        )
