"""Scenarios: setpoint programmes and the disturbances the controller cannot see.

A :class:`Scenario` describes an episode: its length, the setpoint programme, and the
hidden exogenous inputs (heat demand of the load, fuel quality, tramp-air leakage).
Each reset draws a concrete schedule from it with the env's ``np_random``: event times
jitter, event sizes jitter, the load wanders (an Ornstein-Uhlenbeck process), and the
training mix draws whole random programmes. Scenarios are named presets or plain
YAML/JSON files with the same fields (:func:`load_scenario`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Scenario",
    "SCENARIOS",
    "EVAL_SCENARIOS",
    "LOAD_REF",
    "N_STEPS_MAX",
    "get_scenario",
    "load_scenario",
    "save_scenario",
]

#: Heat taken by the load at ``load = 1``, W (holds 900 degC at 1.5 MW firing and 3 % O2).
LOAD_REF = 7.4e5

Event = tuple[float, float]

_LIMITS = {
    "setpoint": (600.0, 1100.0),
    "load": (0.0, 1.6),
    "fuel_quality": (0.8, 1.2),
    "leak": (0.0, 0.3),
}


#: Longest episode a scenario may ask for, in control steps (about 5.8 days at 5 s): the schedule
#: is an array of this many rows, so a typo such as ``n_steps: 1e12`` must fail here, not in ``reset``.
N_STEPS_MAX = 100_000


def _is_real(v: Any) -> bool:
    """A real number: int or float (numpy's too), not a bool and not a string."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _check_number(where: str, key: str, v: Any, lo: float, hi: float, low_open: bool = False) -> None:
    ok = _is_real(v) and math.isfinite(v) and (lo < v if low_open else lo <= v) and v <= hi
    if not ok:
        kind = "" if _is_real(v) else f" (a {type(v).__name__}; expected a number)"
        rng = f"({lo}, {hi}]" if low_open else f"[{lo}, {hi}]"
        raise ValueError(f"{where}: {key}={v!r}{kind} outside the allowed range {rng}")


def _check_count(where: str, key: str, v: Any, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; an integral float (``240.0``, as YAML may write it) becomes an int."""
    if _is_real(v) and math.isfinite(v) and float(v).is_integer() and lo <= v <= hi:
        return int(v)
    raise ValueError(f"{where}: {key}={v!r} must be an integer in [{lo}, {hi}]")


def _check_bool(where: str, key: str, v: Any) -> None:
    # Strings are refused, not parsed: "false" is truthy, and guessing would hide the mistake.
    if not isinstance(v, bool | np.bool_):
        raise ValueError(f"{where}: {key}={v!r} must be true or false (a boolean, not a {type(v).__name__})")


def _check_text(where: str, key: str, v: Any) -> None:
    if not isinstance(v, str):
        raise ValueError(f"{where}: {key}={v!r} must be a string")


def _check_events(where: str, key: str, events: Any, lo: float, hi: float) -> tuple[Event, ...]:
    """A sequence of ``(time_s, value)`` pairs with ``time_s >= 0`` and ``value`` in [lo, hi], as floats."""
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, list | tuple):
        raise ValueError(f"{where}: {key}={events!r} must be a list of [time_s, value] pairs")
    out = []
    for ev in events:
        if isinstance(ev, str | bytes | Mapping) or not isinstance(ev, list | tuple) or len(ev) != 2:
            raise ValueError(f"{where}: {key} entry {ev!r} must be a pair [time_s, value]")
        t, val = ev
        if not (_is_real(t) and math.isfinite(t) and t >= 0):
            raise ValueError(f"{where}: {key} time {t!r} must be a finite number of seconds >= 0")
        if not (_is_real(val) and math.isfinite(val) and lo <= val <= hi):
            raise ValueError(f"{where}: {key} value {val!r} outside [{lo}, {hi}]")
        out.append((float(t), float(val)))
    return tuple(out)


@dataclass(frozen=True)
class Scenario:
    """One episode's programme. Events are ``(time_s, new_value)`` pairs, applied as steps."""

    name: str = "custom"
    """Identifier shown in reports."""
    description: str = ""
    """One line for reports and docs."""
    n_steps: int = 240
    """Episode length in control steps (240 x 5 s = 20 min), at most :data:`N_STEPS_MAX`."""
    setpoint: float = 900.0
    """Initial temperature setpoint, degC."""
    setpoint_events: tuple[Event, ...] = ()
    """Setpoint changes, (s, degC)."""
    load: float = 1.0
    """Initial heat demand of the load, as a multiple of ``LOAD_REF`` (hidden)."""
    load_events: tuple[Event, ...] = ()
    """Load changes, (s, multiple of ``LOAD_REF``) (hidden)."""
    fuel_quality: float = 1.0
    """Initial heating value and air demand of the fuel relative to methane (hidden)."""
    fuel_quality_events: tuple[Event, ...] = ()
    """Fuel-quality changes, (s, -) (hidden)."""
    leak: float = 0.02
    """Initial tramp-air leakage into the flue, kg/s (hidden)."""
    leak_events: tuple[Event, ...] = ()
    """Leakage changes, (s, kg/s) (hidden)."""
    time_jitter: float = 20.0
    """Each event time moves by a uniform draw in +-``time_jitter`` s at reset."""
    size_jitter: float = 0.1
    """Each event's step size scales by a uniform draw in 1 +- ``size_jitter`` at reset."""
    load_wander: float = 0.02
    """Stationary std of the load's slow random wander (multiple of ``LOAD_REF``)."""
    load_wander_tau: float = 120.0
    """Correlation time of the load wander, s."""
    randomize: bool = False
    """Draw a random programme at every reset (the training mix) instead of the events."""
    sensor_noise: bool = True
    """Add measurement noise to the observation (the reward uses noise-free signals)."""
    lambda0: float = 1.15
    """Burner air ratio of the steady state the episode starts from."""

    def __post_init__(self) -> None:
        # Each check is a small module-level helper, so that new fields add one line each.
        where = f"Scenario {self.name!r}"
        _check_text(where, "name", self.name)
        _check_text(where, "description", self.description)
        object.__setattr__(self, "n_steps", _check_count(where, "n_steps", self.n_steps, 1, N_STEPS_MAX))
        for key, (lo, hi) in _LIMITS.items():
            _check_number(where, key, getattr(self, key), lo, hi)
            object.__setattr__(self, f"{key}_events",
                               _check_events(where, f"{key}_events", getattr(self, f"{key}_events"), lo, hi))
        for key in ("time_jitter", "size_jitter", "load_wander"):
            _check_number(where, key, getattr(self, key), 0.0, math.inf)
        _check_number(where, "load_wander_tau", self.load_wander_tau, 0.0, math.inf, low_open=True)
        _check_bool(where, "randomize", self.randomize)
        _check_bool(where, "sensor_noise", self.sensor_noise)
        _check_number(where, "lambda0", self.lambda0, 1.0, 2.0)

    # -- schedules -------------------------------------------------------------------
    def sample_schedule(self, rng: np.random.Generator, dt: float) -> np.ndarray:
        """Draw the exogenous inputs for one episode: array ``[n_steps + 1, 4]``.

        Columns: setpoint (degC), load (W), fuel quality (-), leak (kg/s); row ``k`` holds
        during control step ``k`` (time ``k * dt``). All randomness comes from ``rng``.
        """
        spec = self._random_programme(rng, dt) if self.randomize else self
        t = np.arange(self.n_steps + 1) * dt
        sched = np.empty((self.n_steps + 1, 4))
        for col, key in enumerate(("setpoint", "load", "fuel_quality", "leak")):
            base = getattr(spec, key)
            sched[:, col] = base
            prev = base
            for ev_t, ev_v in sorted(getattr(spec, f"{key}_events")):
                t_j = ev_t + rng.uniform(-self.time_jitter, self.time_jitter)
                v_j = prev + (ev_v - prev) * (1.0 + rng.uniform(-self.size_jitter, self.size_jitter))
                v_j = float(np.clip(v_j, *_LIMITS[key]))
                sched[t >= t_j, col] = v_j
                prev = v_j
        # Slow wander of the heat demand (exact OU discretisation), hidden from the controller.
        a = math.exp(-dt / self.load_wander_tau)
        eps = rng.normal(size=self.n_steps + 1) * self.load_wander * math.sqrt(1.0 - a * a)
        wander = np.empty(self.n_steps + 1)
        wander[0] = rng.normal() * self.load_wander
        for k in range(1, self.n_steps + 1):
            wander[k] = a * wander[k - 1] + eps[k]
        sched[:, 1] = np.clip(sched[:, 1] + wander, *_LIMITS["load"]) * LOAD_REF
        return sched

    def _random_programme(self, rng: np.random.Generator, dt: float) -> Scenario:
        """The training mix: a random setpoint programme and random hidden disturbances."""
        horizon = self.n_steps * dt

        def events(rate: float, lo: float, hi: float) -> tuple[Event, ...]:
            n = rng.poisson(rate)
            times = np.sort(rng.uniform(0.05 * horizon, horizon, size=n))
            return tuple((float(ti), float(rng.uniform(lo, hi))) for ti in times)

        return dataclasses.replace(
            self,
            randomize=False,
            setpoint=float(rng.uniform(820.0, 1000.0)),
            setpoint_events=events(2.5, 800.0, 1000.0),
            load=float(rng.uniform(0.5, 1.25)),
            load_events=events(1.5, 0.45, 1.3),
            fuel_quality=float(rng.uniform(0.93, 1.04)),
            fuel_quality_events=events(0.7, 0.9, 1.05),
            leak=float(rng.uniform(0.0, 0.08)),
            leak_events=events(0.7, 0.0, 0.12),
        )

    # -- files -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scenario:
        """Build from a mapping (e.g. a parsed YAML/JSON file); unknown keys raise ``ValueError``."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown scenario field(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**d)  # the fields (events included) are checked and normalised in __post_init__

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists for events), the inverse of :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        for key in list(d):
            if key.endswith("_events"):
                d[key] = [list(ev) for ev in d[key]]
        return d


def _preset(name: str, description: str, **kw: Any) -> Scenario:
    return Scenario(name=name, description=description, **kw)


#: Named presets. The evaluation scenarios each stress one hidden effect.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _preset(
            "nominal", "setpoint steps up and down at constant load",
            setpoint=900.0, setpoint_events=((240.0, 960.0), (600.0, 880.0), (900.0, 930.0)),
        ),
        _preset(
            "load_swing", "unmeasured load steps at a fixed setpoint",
            setpoint=920.0, load_events=((180.0, 1.25), (540.0, 0.6), (900.0, 0.95)),
        ),
        _preset(
            "fuel_quality", "the fuel's heating value and air demand drift (e.g. inert gas in the supply)",
            setpoint=920.0, setpoint_events=((450.0, 960.0),),
            fuel_quality_events=((200.0, 0.94), (750.0, 1.03)),
        ),
        _preset(
            "air_leak", "tramp air leaks into the flue (an open door): O2 reads high, the burner runs lean",
            setpoint=900.0, setpoint_events=((450.0, 940.0),),
            leak=0.01, leak_events=((200.0, 0.07), (750.0, 0.03)),
        ),
        _preset(
            "low_fire", "low load, where the CO knee sits at higher O2",
            setpoint=860.0, load=0.5, setpoint_events=((300.0, 830.0), (750.0, 890.0)),
        ),
        _preset(
            "train_mix", "random setpoint programmes and disturbances (for training)",
            randomize=True,
        ),
    )
}
#: The scenarios every evaluation reports (the training mix is excluded).
EVAL_SCENARIOS: tuple[str, ...] = ("nominal", "load_swing", "fuel_quality", "air_leak", "low_fire")


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a ``.yaml``/``.yml`` or ``.json`` file.

    Every failure (no such file, a directory, unreadable or binary content, malformed YAML or
    JSON, bad fields) raises ``ValueError`` naming the file.
    """
    path = Path(path)
    where = f"scenario file {str(path)!r}"
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{where}: expected a .yaml, .yml or .json file")
    if path.is_dir():
        raise ValueError(f"{where} is a directory; pass a .yaml or .json file")
    if not path.is_file():
        raise ValueError(f"{where} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{where} cannot be read as UTF-8 text ({type(err).__name__}: {err})") from err
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - json/yaml raise their own error types; all mean "malformed"
        raise ValueError(f"{where} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{err}") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    data = dict(data)
    data.setdefault("name", path.stem)
    try:
        return Scenario.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def save_scenario(scenario: Scenario, path: str | Path) -> None:
    """Write a scenario as YAML or JSON (by suffix)."""
    path = Path(path)
    d = scenario.to_dict()
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(d, indent=2))
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(d, sort_keys=False))
    else:
        raise ValueError(f"scenario file {str(path)!r}: expected a .yaml, .yml or .json suffix")


def get_scenario(spec: str | Path | Scenario | Mapping[str, Any]) -> Scenario:
    """Resolve a preset name, a YAML/JSON path, a mapping or a :class:`Scenario`."""
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, Mapping):
        return Scenario.from_dict(spec)
    s = str(spec)
    if s in SCENARIOS:
        return SCENARIOS[s]
    if s.lower().endswith((".yaml", ".yml", ".json")):
        return load_scenario(s)
    raise ValueError(f"unknown scenario {s!r}; allowed: {sorted(SCENARIOS)} or a .yaml/.json file")
