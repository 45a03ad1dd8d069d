"""Scenarios: setpoint programmes and the disturbances the controller cannot see.

A :class:`Scenario` describes an episode: its length, the setpoint programme, and the
hidden exogenous inputs (heat demand of the load, fuel quality, tramp-air leakage).
Each reset draws a concrete schedule from it with the env's ``np_random``: event times
jitter, event sizes jitter, the load wanders (an Ornstein-Uhlenbeck process), and the
training mix draws whole random programmes. Scenarios are named presets or plain
YAML/JSON files with the same fields (:func:`load_scenario`).

A scenario can also change the plant itself (:attr:`Scenario.plant`: fixed values or ranges
drawn at every reset, i.e. domain randomisation; :attr:`Scenario.plant_events`: steps and
linear drifts during the episode, e.g. fouling). :data:`FAMILIES` splits the named scenarios
into a ``tune`` family, on which defaults are chosen, and a ``test`` family, on which they are
only reported (:func:`refuse_test_family` guards the tuning scripts).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from furnace_env.physics import STRUCTURAL_FIELDS, FurnaceParams, is_real

__all__ = [
    "Scenario",
    "SCENARIOS",
    "EVAL_SCENARIOS",
    "FAMILIES",
    "PLANT_FIELDS",
    "TRAINING_PLANT",
    "PLANT_CHANGE_SCENARIOS",
    "out_of_range_step",
    "family_scenarios",
    "refuse_test_family",
    "LOAD_REF",
    "N_STEPS_MAX",
    "get_scenario",
    "load_scenario",
    "save_scenario",
]

#: Heat taken by the load at ``load = 1``, W (holds 900 degC at 1.5 MW firing and 3 % O2).
LOAD_REF = 7.4e5

Event = tuple[float, float]
#: A plant field's value for the episode: fixed, or a ``(low, high)`` range drawn uniformly at reset.
PlantValue = float | tuple[float, float]
#: ``(time_s, field, value, ramp_s)``: from ``time_s`` the field moves linearly to ``value`` over
#: ``ramp_s`` seconds (0: a step). Files may give three entries, ``ramp_s`` then defaults to 0.
PlantEvent = tuple[float, str, float, float]

#: :class:`FurnaceParams` fields a scenario may set or change (all but :data:`STRUCTURAL_FIELDS`).
PLANT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(FurnaceParams) if f.name not in STRUCTURAL_FIELDS
)
_PARAM_INDEX = {f.name: i for i, f in enumerate(dataclasses.fields(FurnaceParams))}

_LIMITS = {
    "setpoint": (600.0, 1100.0),
    "load": (0.0, 1.6),
    "fuel_quality": (0.8, 1.2),
    "leak": (0.0, 0.3),
}


#: Longest episode a scenario may ask for, in control steps (about 5.8 days at 5 s): the schedule
#: is an array of this many rows, so a typo such as ``n_steps: 1e12`` must fail here, not in ``reset``.
N_STEPS_MAX = 100_000


def _check_number(where: str, key: str, v: Any, lo: float, hi: float, low_open: bool = False) -> float:
    """``v`` as a Python float if it is a real number in the range, else a ``ValueError`` (numpy
    scalars become floats, so that the scenario saves as YAML or JSON like any other)."""
    ok = is_real(v) and math.isfinite(v) and (lo < v if low_open else lo <= v) and v <= hi
    if not ok:
        kind = "" if is_real(v) else f" (a {type(v).__name__}; expected a number)"
        rng = f"({lo}, {hi}]" if low_open else f"[{lo}, {hi}]"
        raise ValueError(f"{where}: {key}={v!r}{kind} outside the allowed range {rng}")
    return float(v)


def _check_count(where: str, key: str, v: Any, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; an integral float (``240.0``, as YAML may write it) becomes an int."""
    if is_real(v) and math.isfinite(v) and float(v).is_integer() and lo <= v <= hi:
        return int(v)
    raise ValueError(f"{where}: {key}={v!r} must be an integer in [{lo}, {hi}]")


def _check_bool(where: str, key: str, v: Any) -> bool:
    # Strings are refused, not parsed: "false" is truthy, and guessing would hide the mistake.
    if not isinstance(v, bool | np.bool_):
        raise ValueError(f"{where}: {key}={v!r} must be true or false (a boolean, not a {type(v).__name__})")
    return bool(v)


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
        if not (is_real(t) and math.isfinite(t) and t >= 0):
            raise ValueError(f"{where}: {key} time {t!r} must be a finite number of seconds >= 0")
        if not (is_real(val) and math.isfinite(val) and lo <= val <= hi):
            raise ValueError(f"{where}: {key} value {val!r} outside [{lo}, {hi}]")
        out.append((float(t), float(val)))
    return tuple(out)


@dataclass(frozen=True)
class Scenario:
    """One episode's programme. Events are ``(time_s, new_value)`` pairs, applied as steps."""

    name: str = "custom"
    """Identifier shown in reports and part of output file names (no path separators)."""
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
    plant: tuple[tuple[str, PlantValue], ...] = ()
    """Plant fields that differ from the env's base plant (``params``), hidden: a mapping (or
    ``(field, value)`` pairs) of :data:`PLANT_FIELDS` names to a value or a ``[low, high]`` range
    drawn uniformly from the env's ``np_random`` at every reset. Stored as sorted pairs."""
    plant_events: tuple[PlantEvent, ...] = ()
    """Plant changes during the episode, ``(time_s, field, value[, ramp_s])`` (see
    :data:`PlantEvent`), applied at control-step resolution and never jittered (hidden); at most one
    change of a field at any one time."""

    def __post_init__(self) -> None:
        # Each check is a small module-level helper, so that new fields add one line each.
        where = f"Scenario {self.name!r}"
        _check_text(where, "name", self.name)
        if any(c in self.name for c in "/\\\0"):  # it names output files (plots, cached episodes)
            raise ValueError(f"{where}: name={self.name!r} must not contain '/', '\\' or NUL: it is part of "
                             "file names")
        _check_text(where, "description", self.description)
        object.__setattr__(self, "n_steps", _check_count(where, "n_steps", self.n_steps, 1, N_STEPS_MAX))
        _check_plant(self)
        # Numbers and booleans are stored as Python's (a numpy scalar would not save as YAML or JSON).
        for key, (lo, hi) in _LIMITS.items():
            object.__setattr__(self, key, _check_number(where, key, getattr(self, key), lo, hi))
            object.__setattr__(self, f"{key}_events",
                               _check_events(where, f"{key}_events", getattr(self, f"{key}_events"), lo, hi))
        for key in ("time_jitter", "size_jitter", "load_wander"):
            object.__setattr__(self, key, _check_number(where, key, getattr(self, key), 0.0, math.inf))
        object.__setattr__(self, "load_wander_tau",
                           _check_number(where, "load_wander_tau", self.load_wander_tau, 0.0, math.inf, low_open=True))
        object.__setattr__(self, "randomize", _check_bool(where, "randomize", self.randomize))
        object.__setattr__(self, "sensor_noise", _check_bool(where, "sensor_noise", self.sensor_noise))
        object.__setattr__(self, "lambda0", _check_number(where, "lambda0", self.lambda0, 1.0, 2.0))

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

    def sample_plant(self, rng: np.random.Generator, base: FurnaceParams) -> tuple[FurnaceParams, np.ndarray | None]:
        """Draw this episode's plant: ``base`` with :attr:`plant`'s fields set (ranges drawn
        uniformly from ``rng``, one draw per ranged field in name order; nothing is drawn when
        no field has a range), and, when there are :attr:`plant_events`, the plant in force
        during each control step, ``[n_steps + 1, len(fields)]`` in
        :meth:`FurnaceParams.to_array`'s layout (row ``k``: step ``k``, time ``k * dt``).
        """
        drawn = {name: float(rng.uniform(*v)) if isinstance(v, tuple) else float(v) for name, v in self.plant}
        plant = dataclasses.replace(base, **drawn) if drawn else base
        if not self.plant_events:
            return plant, None
        t = np.arange(self.n_steps + 1) * base.dt
        table = np.tile(plant.to_array(), (self.n_steps + 1, 1))
        for t0, name, value, ramp in sorted(self.plant_events):
            col = table[:, _PARAM_INDEX[name]]
            on = t >= t0
            if not on.any():
                continue
            start = col[np.argmax(on)]  # the value in force when the event begins
            frac = np.clip((t[on] - t0) / ramp, 0.0, 1.0) if ramp > 0 else 1.0
            col[on] = start + (value - start) * frac
        return plant, table

    @property
    def plant_names(self) -> tuple[str, ...]:
        """The plant fields this scenario sets or changes (sorted), the keys of ``info["plant"]``."""
        return tuple(sorted({name for name, _ in self.plant} | {ev[1] for ev in self.plant_events}))

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
        d["plant"] = {name: list(v) if isinstance(v, tuple) else v for name, v in self.plant}
        return d


# -- plant validation (its own functions: the rest of ``__post_init__`` checks the programme) ----------
def _is_number(v: Any) -> bool:
    return is_real(v) and math.isfinite(v)


def _plant_field(sc: Scenario, where: str, name: Any) -> str:
    """``name`` if a scenario may set that plant field, else a ``ValueError`` naming what is allowed."""
    if isinstance(name, str) and name in PLANT_FIELDS:
        return name
    if isinstance(name, str) and name in STRUCTURAL_FIELDS:
        raise ValueError(f"Scenario {sc.name!r}: {where} field {name!r} cannot vary per episode (it sets the "
                         f"control step, the buffer sizes or the action/observation scaling; pass it in "
                         f"params=); allowed: {list(PLANT_FIELDS)}")
    raise ValueError(f"Scenario {sc.name!r}: unknown {where} field {name!r}; allowed: {list(PLANT_FIELDS)}")


def _plant_value(sc: Scenario, where: str, name: str, v: Any) -> float:
    """``v`` as a float if it is a valid value of ``FurnaceParams.<name>``, else a ``ValueError``."""
    if not _is_number(v):
        hint = " (YAML reads 1.8e5 as text: write 1.8e+5 or 180000.0)" if isinstance(v, str) else ""
        raise ValueError(f"Scenario {sc.name!r}: {where} {name}={v!r} must be a finite number{hint}")
    err = _param_error(name, float(v))
    if err:
        raise ValueError(f"Scenario {sc.name!r}: {where} {name}={v!r} is not a valid plant value ({err})")
    return float(v)


@functools.lru_cache(maxsize=1024)
def _param_error(name: str, v: float) -> str:
    """``FurnaceParams``' own complaint about ``name=v`` ('' if none); cached, as the training mix
    rebuilds its scenario, and so re-validates the same plant ranges, at every reset."""
    try:
        dataclasses.replace(FurnaceParams(), **{name: v})
    except ValueError as err:
        return str(err)
    return ""


def _check_plant(sc: Scenario) -> None:
    """Validate ``plant`` and ``plant_events`` and store them in their canonical, hashable form:
    ``plant`` as name-sorted ``(field, value or (low, high))`` pairs, events as 4-tuples."""
    raw = sc.plant
    items = list(raw.items()) if isinstance(raw, Mapping) else raw
    if not isinstance(items, list | tuple):
        raise ValueError(f"Scenario {sc.name!r}: plant={raw!r} must be a mapping of field names to a value "
                         "or a [low, high] range")
    plant: dict[str, PlantValue] = {}
    for item in items:
        if not (isinstance(item, list | tuple) and len(item) == 2):
            raise ValueError(f"Scenario {sc.name!r}: plant entry {item!r} must be (field, value or [low, high])")
        name = _plant_field(sc, "plant", item[0])
        if name in plant:
            raise ValueError(f"Scenario {sc.name!r}: plant field {name!r} given twice")
        v = item[1]
        if isinstance(v, np.ndarray) and v.ndim == 1:
            v = v.tolist()  # a range built with numpy
        if isinstance(v, list | tuple):
            if len(v) != 2:
                raise ValueError(f"Scenario {sc.name!r}: plant {name}={v!r}: a range is [low, high]")
            lo, hi = (_plant_value(sc, "plant", name, x) for x in v)
            if lo > hi:
                raise ValueError(f"Scenario {sc.name!r}: plant {name}={list(v)!r}: low > high")
            plant[name] = (lo, hi)
        else:
            plant[name] = _plant_value(sc, "plant", name, v)
    object.__setattr__(sc, "plant", tuple(sorted(plant.items())))

    events = sc.plant_events
    if not isinstance(events, list | tuple):
        raise ValueError(f"Scenario {sc.name!r}: plant_events={events!r} must be a list of "
                         "(time_s, field, value[, ramp_s])")
    out: list[PlantEvent] = []
    for ev in events:
        if not (isinstance(ev, list | tuple) and len(ev) in (3, 4)):
            raise ValueError(f"Scenario {sc.name!r}: plant_events entry {ev!r} must be (time_s, field, value[, ramp_s])")
        t, name, value, ramp = (*ev, 0.0) if len(ev) == 3 else ev
        name = _plant_field(sc, "plant_events", name)
        for what, x in (("time", t), ("ramp", ramp)):
            if not (_is_number(x) and x >= 0):
                raise ValueError(f"Scenario {sc.name!r}: plant_events {what} {x!r} in {ev!r} must be finite and >= 0 s")
        out.append((float(t), name, _plant_value(sc, "plant_events", name, value), float(ramp)))
    # Two changes of one field at one time: events are applied in time order, so which one wins would
    # depend on their values, not on the order the file gives them in.
    seen = {}
    for ev in out:
        if ev[:2] in seen:
            raise ValueError(f"Scenario {sc.name!r}: plant_events {list(seen[ev[:2]])} and {list(ev)} change "
                             f"{ev[1]!r} at the same time {ev[0]:g} s; give one")
        seen[ev[:2]] = ev
    object.__setattr__(sc, "plant_events", tuple(out))


def _preset(name: str, description: str, **kw: Any) -> Scenario:
    return Scenario(name=name, description=description, **kw)


#: The plant range of the training mix, drawn uniformly at every reset (domain randomisation),
#: so that a model trained on it has seen furnaces that differ the way real ones do. Around the
#: :class:`FurnaceParams` defaults:
#:
#: * ``heat_capacity`` +-15 % and ``ua`` +-10 %: charge mass and refractory vary between
#:   furnaces and loads, insulation ages; they set the temperature loop's gain and time constant.
#: * ``o2_knee`` +-0.25 % O2 and ``co_width`` +-15 %: burner condition and tuning move the CO
#:   knee, where the fuel saving of low excess air ends.
#: * ``tau_fuel``, ``tau_air``, ``tau_o2``, ``tau_co`` +-25 % and ``tau_tc`` +-20 %: actuator and
#:   analyser lags differ between installations and drift with wear and dirt.
#: * ``t_amb`` 10-40 degC: the seasons (ambient and combustion-air temperature).
#: * ``lhv`` +-3 %: gas composition (``fuel_quality`` moves heating value and air demand together;
#:   this moves the heating value alone).
#:
#: Dead times, full-scale flows and the control step stay fixed (:data:`STRUCTURAL_FIELDS`). The
#: test family's out-of-range plants lie outside these bounds on purpose.
TRAINING_PLANT: dict[str, tuple[float, float]] = {
    "heat_capacity": (1.7e5, 2.3e5),
    "ua": (135.0, 165.0),
    "o2_knee": (1.75, 2.25),
    "co_width": (0.29, 0.39),
    "tau_fuel": (1.5, 2.5),
    "tau_air": (4.5, 7.5),
    "tau_tc": (8.0, 12.0),
    "tau_o2": (2.25, 3.75),
    "tau_co": (3.75, 6.25),
    "t_amb": (10.0, 40.0),
    "lhv": (48.5e6, 51.5e6),
}


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
            "train_mix", "random setpoint programmes, disturbances and plants (for training)",
            randomize=True, plant=TRAINING_PLANT,
        ),
    )
}
#: The named example scenarios, each stressing one hidden effect (the ``tune`` family).
EVAL_SCENARIOS: tuple[str, ...] = ("nominal", "load_swing", "fuel_quality", "air_leak", "low_fire")

# The test family: written before any tuning on it and never used to choose a default. Each
# differs from the presets in its programme, its combination of disturbances or its plant.
_TEST_PRESETS = (
    _preset(
        "long_climb", "a slow climb 840 -> 990 degC in 10 K steps every minute, then a hold",
        setpoint=840.0, setpoint_events=tuple((120.0 + 60.0 * i, 850.0 + 10.0 * i) for i in range(15)),
        time_jitter=5.0,
    ),
    _preset(
        "fast_down", "a 140 K down-step from high fire (the furnace can only cool by its losses), then back up",
        setpoint=980.0, load=1.1, setpoint_events=((300.0, 840.0), (800.0, 920.0)),
    ),
    _preset(
        "swing_and_fuel", "unmeasured load swings while the fuel quality drifts",
        setpoint=900.0, load_events=((200.0, 1.2), (650.0, 0.7), (1000.0, 1.0)),
        fuel_quality_events=((350.0, 0.95), (850.0, 1.02)),
    ),
    _preset(
        "leak_low_fire", "a tramp-air leak opens at low fire, then the setpoint rises",
        setpoint=850.0, load=0.55, leak=0.01, leak_events=((250.0, 0.06),), setpoint_events=((600.0, 880.0),),
    ),
    _preset(
        "plant_in_range", "a plant inside the training range: C +10 %, UA -7 %, CO knee +0.15 % O2, "
        "slower damper, warm day",
        setpoint=880.0, setpoint_events=((300.0, 940.0), (800.0, 900.0)),
        plant={"heat_capacity": 2.2e5, "ua": 140.0, "o2_knee": 2.15, "tau_air": 7.0, "t_amb": 35.0},
    ),
    _preset(
        "plant_out_of_range", "a plant outside the training range: C x1.25, UA -15 %, CO knee +0.5 % O2",
        setpoint=910.0, setpoint_events=((300.0, 960.0), (750.0, 890.0)),
        plant={"heat_capacity": 2.5e5, "ua": 127.5, "o2_knee": 2.5},
    ),
    _preset(
        "fouled", "a strongly fouled plant: sooted burner (CO knee 2.9 % O2, wider), slow dirty analysers, "
        "sticky fuel valve; a load step",
        setpoint=900.0, load_events=((400.0, 1.15),),
        plant={"o2_knee": 2.9, "co_width": 0.5, "tau_o2": 9.0, "tau_co": 15.0, "tau_fuel": 4.0},
    ),
    _preset(
        "fouling_drift", "fouling during the episode: from 200 s to 1000 s the CO knee drifts 2.0 -> 2.9 % O2 "
        "and the wall loss rises 30 %, out of the training range",
        setpoint=920.0, setpoint_events=((600.0, 950.0),),
        plant_events=((200.0, "o2_knee", 2.9, 800.0), (200.0, "ua", 195.0, 800.0)),
    ),
)
SCENARIOS.update({s.name: s for s in _TEST_PRESETS})

# Plant changes for tuning run-time trust monitoring (the ``tune`` family): at 400 s the plant steps
# out of :data:`TRAINING_PLANT` on the nominal programme. Disjoint from the test family's changes
# (its fouling drift) and from the held-out plants the energy diagnostics measure on.
_TUNE_CHANGES = (
    _preset(
        "shift_charge", "at 400 s a lighter charge with more exposed wall: heat capacity x0.6, wall loss x1.4",
        setpoint=900.0, setpoint_events=((700.0, 940.0),),
        plant_events=((400.0, "heat_capacity", 1.2e5), (400.0, "ua", 210.0)),
    ),
    _preset(
        "shift_burner", "at 400 s a damaged burner nozzle: the CO knee jumps 2.0 -> 3.2 % O2 and widens x1.8",
        setpoint=920.0, setpoint_events=((700.0, 890.0),),
        plant_events=((400.0, "o2_knee", 3.2), (400.0, "co_width", 0.61)),
    ),
    _preset(
        "shift_damper", "at 400 s a sticking damper and a fouled O2 probe: air lag x2.5, O2 analyser lag x2.5",
        setpoint=880.0, setpoint_events=((700.0, 930.0),),
        plant_events=((400.0, "tau_air", 15.0), (400.0, "tau_o2", 7.5)),
    ),
)
SCENARIOS.update({s.name: s for s in _TUNE_CHANGES})
#: The ``tune`` family's plant-change scenarios (each steps the plant out of the training range at 400 s).
PLANT_CHANGE_SCENARIOS: tuple[str, ...] = tuple(s.name for s in _TUNE_CHANGES)


def out_of_range_step(scenario: Scenario | str, ranges: Mapping[str, tuple[float, float]] | None = None,
                      base: FurnaceParams | None = None) -> int | None:
    """The first control step at which ``scenario``'s plant lies outside ``ranges`` (default
    :data:`TRAINING_PLANT`), or None when it never does. A field without a range is out of range as
    soon as it differs from ``base`` (default :class:`FurnaceParams`), since training never varied it.
    Only for scenarios whose plant is fixed or changes by :attr:`Scenario.plant_events` (a ranged
    ``plant`` is drawn per episode: ``ValueError``)."""
    sc = get_scenario(scenario)
    if any(isinstance(v, tuple) for _, v in sc.plant):
        raise ValueError(f"out_of_range_step: scenario {sc.name!r} draws its plant per episode; give a fixed plant")
    rng_map = dict(TRAINING_PLANT if ranges is None else ranges)
    base = base if base is not None else FurnaceParams()
    plant, table = sc.sample_plant(np.random.default_rng(0), base)
    rows = table if table is not None else plant.to_array()[None]
    nominal = base.to_array()
    out = np.zeros(rows.shape[0], dtype=bool)
    for name, i in _PARAM_INDEX.items():
        if name in STRUCTURAL_FIELDS:
            continue
        lo, hi = rng_map.get(name, (nominal[i], nominal[i]))
        tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
        out |= (rows[:, i] < lo - tol) | (rows[:, i] > hi + tol)
    return int(np.argmax(out)) if out.any() else None

#: Named scenario families. ``tune``: the scenarios defaults are chosen on (the five examples and
#: three plant changes out of the training range, for the trust monitor).
#: ``test``: scenarios unlike them (other programmes, combined disturbances, plants inside and
#: outside :data:`TRAINING_PLANT`, drift out of it), only ever reported. Disjoint.
FAMILIES: dict[str, tuple[str, ...]] = {
    "tune": EVAL_SCENARIOS + PLANT_CHANGE_SCENARIOS,
    "test": tuple(s.name for s in _TEST_PRESETS),
}


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


def family_scenarios(family: str) -> tuple[Scenario, ...]:
    """The scenarios of a :data:`FAMILIES` entry; an unknown family raises ``ValueError`` naming the allowed ones."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scenario family {family!r}; allowed: {sorted(FAMILIES)}")
    return tuple(SCENARIOS[n] for n in FAMILIES[family])


def _programme(sc: Scenario) -> Scenario:
    # What a scenario does, without its labels or length: a renamed or shortened copy still matches.
    return dataclasses.replace(sc, name="", description="", n_steps=1)


def refuse_test_family(scenarios: Iterable[Scenario], purpose: str = "tuning") -> None:
    """Raise ``ValueError`` if any scenario is (a renamed or shortened copy of) a ``test``-family one.

    Tuning scripts call this before any work: a default chosen on the test family would make
    the family's results a measure of the tuning distribution again.
    """
    test = {_programme(SCENARIOS[n]): n for n in FAMILIES["test"]}
    for sc in scenarios:
        hit = sc.name if sc.name in FAMILIES["test"] else test.get(_programme(sc))
        if hit is not None:
            raise ValueError(f"scenario {sc.name!r} is the test-family scenario {hit!r}; the 'test' family "
                             f"{list(FAMILIES['test'])} is never used for {purpose}: use the 'tune' family "
                             f"{list(FAMILIES['tune'])}, the training mix or your own scenarios")
