"""Typed configuration of the EB-LNN world model: one dataclass per component, composed into a run.

Every value is defined once, here, with a docstring under its field. YAML files
(:meth:`WorldModelRunConfig.from_yaml`) and command-line flags
(:func:`add_cli_args` / :func:`config_from_cli`, built on the project's one mechanism in
:mod:`eblnn_agent.cli`) only override these defaults; the flags, their types and their help
texts are generated from the fields, so nothing is written twice. Field names are unique across sections, so every flag is flat
(``--alpha``, ``--hidden_size``, ``--n_steps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eblnn_agent.cli import ConfigError, add_dataclass_flags, coerce, field_docs, read_yaml_mapping
from eblnn_agent.logger import WANDB_DEFAULT, WANDB_MODES

__all__ = [
    "ConfigError",
    "ModelConfig",
    "EnergyConfig",
    "DataConfig",
    "TrainConfig",
    "WorldModelRunConfig",
    "add_cli_args",
    "config_from_cli",
    "field_docs",
]


#: Largest Langevin step size: the chains live in the box [-sample_clamp, sample_clamp] (1 by
#: default), so a step of this size already jumps across it; larger values only add overflow.
STEP_SIZE_MAX = 10.0


def _check(cond: bool, section: str, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{section}.{name}={value!r} is invalid: {allowed}")


@dataclass
class ModelConfig:
    """Architecture of the EB-LNN: CfC body, physics head and energy head."""

    hidden_size: int = 64
    """Number of CfC units (size of the hidden state ``h``)."""
    backbone_units: int = 64
    """Width of the CfC backbone layer(s)."""
    backbone_layers: int = 1
    """Number of CfC backbone layers (>= 1: the fused fast cell needs a backbone)."""
    backbone_activation: str = "lecun_tanh"
    """Backbone activation of the CfC cell: lecun_tanh, silu, tanh, gelu or relu."""
    physics_hidden_dims: list[int] = field(default_factory=lambda: [128, 128])
    """Widths of the physics head MLP (h -> normalised observation delta); [] for a linear head.
    Two layers of 128 resolve CO better than one of 64 (docs/benchmarks/world_model.md)."""
    ebm_hidden_dims: list[int] = field(default_factory=lambda: [128, 64])
    """Widths of the energy head MLP (h -> scalar energy), SiLU activations."""
    spectral_norm: bool = False
    """Spectral normalisation on every linear layer of the energy head(s) (Lipschitz <= 1). Off by
    default: it stops the head from resolving the one-step effect of an action on h
    (docs/benchmarks/world_model.md, "How")."""
    multiscale: bool = True
    """Add a coarse energy head on the time-pooled hidden sequence to the per-step fine energy."""
    co_log_scale: float = 10.0
    """The model sees and predicts CO as ``s * log1p(CO / s)`` with this ``s`` in ppm (0: linear CO);
    see :mod:`eblnn_agent.transforms`. On a linear scale the model under-predicted CO at the knee
    by about half, and the planner exploited it."""

    latent_l2: float = 0.0
    """L2 on the latent (seed 003): the fine energy is ``E(h) = head(c) + latent_l2 * |c|^2`` for the
    CfC state ``c``, everywhere the energy is read (training, Langevin, planning). It keeps the
    energy from hiding information in large latents (a flat, degenerate landscape); 0: off."""

    setpoint_input: bool = True
    """Feed the setpoint channel to the cell. The furnace does not know its setpoint, and a model
    that reads it can learn from controller-driven data a dependence the plant does not have (the
    default model's 20-step temperature prediction moves with the setpoint under a held action);
    false removes it. The setpoint-blind model is no better in closed loop, so it stays on
    (docs/tuning.md, "Training-objective and input variants")."""

    def validate(self) -> None:
        s = "model"
        _check(isinstance(self.latent_l2, int | float) and math.isfinite(self.latent_l2) and self.latent_l2 >= 0,
               s, "latent_l2", self.latent_l2, "must be a finite number >= 0")
        _check(isinstance(self.setpoint_input, bool), s, "setpoint_input", self.setpoint_input, "must be true or false")
        for name in ("hidden_size", "backbone_units", "backbone_layers"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, s, name, v, "must be an integer >= 1")
        allowed = ("lecun_tanh", "silu", "tanh", "gelu", "relu")
        _check(self.backbone_activation in allowed, s, "backbone_activation", self.backbone_activation,
               f"allowed values: {allowed}")
        _check(isinstance(self.co_log_scale, int | float) and math.isfinite(self.co_log_scale)
               and self.co_log_scale >= 0, s, "co_log_scale", self.co_log_scale, "must be finite and >= 0")
        for name in ("physics_hidden_dims", "ebm_hidden_dims"):
            v = getattr(self, name)
            _check(isinstance(v, list | tuple) and all(isinstance(x, int) and x >= 1 for x in v),
                   s, name, v, "must be a list of integers >= 1")


@dataclass
class EnergyConfig:
    """Contrastive-divergence training of the energy head and its Langevin sampler (seed's table)."""

    alpha: float = 1.0
    """Weight of the CD loss relative to the physics loss: L = L_physics + alpha * L_CD."""
    l2_reg: float = 0.01
    """Energy-magnitude regulariser: l2_reg * (E_real^2 + E_fantasy^2)."""
    n_steps: int = 20
    """Langevin MCMC steps per training batch."""
    step_size: float = 0.01
    """Langevin step size: x <- x - (step_size / 2) grad E(x) + noise."""
    noise_scale: float = 0.005
    """Standard deviation of the Gaussian noise added at each Langevin step."""
    buffer_capacity: int = 10000
    """Capacity of the replay buffer of fantasy states (a preallocated tensor ring)."""
    buffer_prob: float = 0.95
    """Probability that a chain starts from the replay buffer (else from uniform noise)."""
    langevin_grad_clip: float = 1.0
    """Per-sample clip of the Langevin gradient norm (0: no clipping)."""
    sample_clamp: float = 1.0
    """Fantasy states are clamped to [-sample_clamp, sample_clamp] (CfC states lie in (-1, 1)); 0: off."""
    cd_batch: int = 256
    """Real hidden states (and as many fantasies) per CD step, drawn from the batch's valid steps."""
    detach_hidden: bool = True
    """Train the energy on detached hidden states, so the CD term does not reshape the CfC body."""
    hard_negatives: bool = True
    """Hard-negative mining: perturbed real hidden states, hinge loss with a margin."""
    hard_negative_noise: float = 0.1
    """Std of the Gaussian perturbation of real hidden states that makes hard negatives."""
    hard_negative_margin: float = 20.0
    """Margin of the hinges relu(margin + E(real) - E(negative)); relative to the energy scale
    1 / (2 l2_reg) = 50: a margin well below that scale separates real from bang-bang transitions
    less well (docs/tuning.md, "Settings recorded in docstrings before")."""
    hard_negative_weight: float = 1.0
    """Weight of the hard-negative hinge inside L_CD."""
    action_negative_weight: float = 1.0
    """Weight of the action-negative hinge: the state reached from the same real (obs, h) with a
    uniformly random action must sit hard_negative_margin above the real one (0: off)."""
    langevin_negatives: bool = True
    """Contrast real states with Langevin fantasies from the replay buffer (the CD term with its
    l2_reg regulariser). False: no chains run; only the l2_reg term on real energies and the hinges
    train the energy (an ablation)."""
    hard_negative_prob: float = 1.0
    """Probability (seed 003) that a training step includes the hard-negative hinge (drawn from the
    trainer's generator); validation weights the hinge by it. 1: every step, 0: never."""
    next_obs_negative_weight: float = 1.0
    """Weight of the perturbed-next-observation hinge: a real history ``h_{t+1}`` followed by a
    next observation ``obs_{t+1}`` moved off the truth (temperature, O2, CO and the flows) must sit
    above the state of the real next observation, by a margin that grows with the size of the move
    (see :func:`eblnn_agent.negatives.perturbed_next_pairs`). 0: off."""
    next_obs_noise: float = 3.0
    """Largest perturbation of the next observation, in one-step delta standard deviations (each
    negative draws its size uniformly up to this, and its margin scales with it)."""
    other_plant_weight: float = 1.0
    """Weight of the other-plant hinge: windows whose second half is an episode of another plant of
    the family (``other_plant_steps`` transitions collected on
    :data:`eblnn_agent.negatives.NEGATIVE_PLANTS`) filtered on from this plant's history must sit
    above this plant's own continuation. 0: off (no other-plant data collected). The three
    transition negatives are on by default: chosen on the tuning family (docs/tuning.md, "the
    transition negatives"), reported on the test family."""
    other_plant_steps: int = 30000
    """Transitions collected across the negative plants (when ``other_plant_weight > 0``)."""
    other_plant_path: str = ""
    """Dataset of the other plants' transitions (reloaded when its provenance matches); "" : beside
    ``data_path``, its name ending ``_other_plants.npz``."""
    splice_skip: int = 4
    """Steps after the splice whose states are not used as other-plant negatives (the jump at the
    splice is itself a perturbed observation; the steps after it show the other plant's dynamics)."""
    rollout_negative_weight: float = 1.0
    """Weight of the rollout hinge: the states of the model's own open-loop predictions (the real
    actions from a real filtered state) where the predicted observation has left the truth by
    more than ``rollout_negative_threshold`` must sit above the real filtered states. 0: off."""
    rollout_negative_steps: int = 20
    """Length of the open-loop predictions of the rollout negatives (capped at the window - 1)."""
    rollout_negative_threshold: float = 3.0
    """Prediction error beyond which a rollout state is a negative: RMS over the physical channels of
    the error in one-step delta standard deviations (the model's space)."""

    def validate(self) -> None:
        s = "energy"
        for name in ("alpha", "l2_reg", "noise_scale", "langevin_grad_clip", "sample_clamp",
                     "hard_negative_noise", "hard_negative_margin", "hard_negative_weight",
                     "action_negative_weight", "next_obs_negative_weight", "next_obs_noise", "other_plant_weight",
                     "rollout_negative_weight", "rollout_negative_threshold"):
            v = getattr(self, name)
            _check(isinstance(v, int | float) and math.isfinite(v) and v >= 0, s, name, v,
                   "must be a finite number >= 0")
        _check(isinstance(self.step_size, int | float) and 0 < self.step_size <= STEP_SIZE_MAX,
               s, "step_size", self.step_size, f"must be a number in (0, {STEP_SIZE_MAX}]")
        _check(isinstance(self.n_steps, int) and self.n_steps >= 0, s, "n_steps", self.n_steps,
               "must be an integer >= 0")
        _check(isinstance(self.cd_batch, int) and self.cd_batch >= 1, s, "cd_batch", self.cd_batch,
               "must be an integer >= 1")
        _check(isinstance(self.buffer_capacity, int) and self.buffer_capacity >= 1, s, "buffer_capacity",
               self.buffer_capacity, "must be an integer >= 1")
        _check(isinstance(self.buffer_prob, int | float) and 0.0 <= self.buffer_prob <= 1.0, s,
               "buffer_prob", self.buffer_prob, "must be a probability in [0, 1]")
        _check(isinstance(self.hard_negative_prob, int | float) and 0.0 <= self.hard_negative_prob <= 1.0, s,
               "hard_negative_prob", self.hard_negative_prob, "must be a probability in [0, 1]")
        for name in ("other_plant_steps", "rollout_negative_steps"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, s, name, v, "must be an integer >= 1")
        _check(isinstance(self.splice_skip, int) and self.splice_skip >= 0, s, "splice_skip", self.splice_skip,
               "must be an integer >= 0")
        _check(isinstance(self.langevin_negatives, bool), s, "langevin_negatives", self.langevin_negatives,
               "must be true or false")


@dataclass
class DataConfig:
    """Data collection on Furnace-v0 and its split into training windows."""

    n_env_steps: int = 150_000
    """Budget of real environment steps (transitions) to collect."""
    data_path: str = "data/furnace_transitions.npz"
    """Dataset file: reloaded when present with the same provenance, else collected and saved."""
    scenario: str = "train_mix"
    """Furnace-v0 scenario the data are collected on (the training mix)."""
    num_envs: int = 64
    """Furnaces stepped together in the native vector env during collection."""
    pi_fraction: float = 0.5
    """Fraction of episodes driven by the PI controller plus correlated noise (the rest: random actions)."""
    window: int = 32
    """Length of the training windows (steps of (observation, action) per sequence)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation (early stopping)."""
    test_fraction: float = 0.1
    """Fraction of episodes held out for testing (evaluate/world_model_quality.py)."""
    data_seed: int | None = None
    """Seed of the data collection and of the train/val/test split (None: the run's ``seed``). Set
    it to train several models on the same data from different initialisations (``--seed``), e.g.
    the members of a planning ensemble."""

    def validate(self) -> None:
        s = "data"
        _check(isinstance(self.n_env_steps, int) and self.n_env_steps >= 1, s, "n_env_steps",
               self.n_env_steps, "must be an integer >= 1")
        _check(isinstance(self.num_envs, int) and self.num_envs >= 1, s, "num_envs", self.num_envs,
               "must be an integer >= 1")
        _check(isinstance(self.window, int) and self.window >= 2, s, "window", self.window,
               "must be an integer >= 2")
        _check(0.0 <= self.pi_fraction <= 1.0, s, "pi_fraction", self.pi_fraction, "must be in [0, 1]")
        _check(isinstance(self.data_path, str) and self.data_path.strip() != "", s, "data_path", self.data_path,
               "must be a file path")
        try:
            from furnace_env.scenarios import get_scenario

            get_scenario(self.scenario)
        except ValueError as err:
            raise ConfigError(f"{s}.scenario={self.scenario!r} is invalid: {err}") from err
        _check(self.data_seed is None or (isinstance(self.data_seed, int) and self.data_seed >= 0), s,
               "data_seed", self.data_seed, "must be null or an integer >= 0")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            _check(isinstance(v, int | float) and 0.0 < v < 0.5, s, name, v, "must be in (0, 0.5)")


@dataclass
class TrainConfig:
    """Optimisation, logging and outputs of a training run."""

    epochs: int = 30
    """Maximum number of passes over the training windows."""
    batch_size: int = 64
    """Windows per gradient step."""
    lr: float = 2e-3
    """Adam learning rate (cosine-decayed to lr / 10 over the run)."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 1.0
    """Clip of the global gradient norm of each model update (0: no clipping)."""
    patience: int = 6
    """Early stopping: epochs without a better val/loss before stopping."""
    max_windows_per_epoch: int = 4000
    """Windows drawn per epoch (random offsets in random training episodes)."""
    seed: int = 0
    """Seed of every random generator of the run (data collection, initialisation, sampling)."""
    device: str = "auto"
    """Torch device: auto (CUDA when present), cpu, cuda or cuda:N."""
    out_dir: str = "runs/world_model"
    """Output directory: best.pt (best checkpoint), last.pt (for --resume), metrics and report."""
    resume: bool = False
    """Continue an interrupted run from out_dir/last.pt."""
    wandb: str = WANDB_DEFAULT
    """W&B logging: auto (online with credentials, else offline), online, offline or disabled."""
    wandb_project: str = "furnace-eblnn"
    """W&B project name."""
    log_every: int = 25
    """Gradient steps between console/W&B training logs."""
    progress: bool = True
    """Show a tqdm progress bar over the training batches."""
    fast_cell: bool = True
    """Train through the fused CfC cell (same maths as the stock ncps forward, fewer ops)."""
    rollout_weight: float = 0.0
    """Weight of the open-loop (multi-step) physics loss: from a random step of each window the
    model runs ``rollout_steps`` steps on its own predictions with the real actions, as the
    planner does, and pays the squared error of every predicted observation (normalised, the
    model's space). 0: one-step teacher forcing only."""
    rollout_steps: int = 16
    """Length of the open-loop segment of ``rollout_weight`` (capped at the window length - 1)."""
    threads: int = 1
    """Torch CPU threads (0: torch's default). One is fastest for these small matrices and does not
    oversubscribe a shared machine (two threads on a busy 2-core box ran 10x slower)."""

    def validate(self) -> None:
        s = "train"
        for name in ("epochs", "batch_size", "patience", "max_windows_per_epoch", "log_every", "rollout_steps"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, s, name, v, "must be an integer >= 1")
        _check(isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0, s, "lr",
               self.lr, "must be a finite number > 0")
        for name in ("weight_decay", "grad_clip", "rollout_weight"):
            v = getattr(self, name)
            _check(isinstance(v, int | float) and math.isfinite(v) and v >= 0, s, name, v,
                   "must be a finite number >= 0")
        _check(self.wandb in WANDB_MODES, s, "wandb", self.wandb, f"allowed values: {WANDB_MODES}")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32, s,
               "seed", self.seed, "must be an integer in [0, 2**32)")
        _check(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 0, s,
               "threads", self.threads, "must be an integer >= 0 (0: torch's default)")
        dev = str(self.device)
        _check(dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:"), s, "device", dev,
               "allowed values: auto, cpu, cuda, cuda:N, mps")


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "energy": EnergyConfig,
    "data": DataConfig,
    "train": TrainConfig,
}


@dataclass
class WorldModelRunConfig:
    """A whole training run: model, energy/CD, data and optimisation sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture."""
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    """Contrastive divergence and Langevin sampler."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data collection and windows."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, logging, outputs."""

    def validate(self) -> WorldModelRunConfig:
        """Check every section; raises :class:`ConfigError` naming the bad value. Returns self."""
        for name in _SECTIONS:
            getattr(self, name).validate()
        return self

    @property
    def data_seed(self) -> int:
        """The seed the data were collected and split with: ``data.data_seed``, else ``train.seed``."""
        return self.train.seed if self.data.data_seed is None else self.data.data_seed

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (YAML/JSON/W&B friendly)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat ``{field: value}`` over all sections (the names of the CLI flags)."""
        return {k: v for sec in self.to_dict().values() for k, v in sec.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> WorldModelRunConfig:
        """Build from a nested dict (``{"model": {...}, ...}``); unknown keys are errors."""
        d = dict(d or {})
        unknown = set(d) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: {list(_SECTIONS)}")
        parts = {}
        for name, klass in _SECTIONS.items():
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {sec!r}")
            names = {f.name for f in dataclasses.fields(klass)}
            bad = set(sec) - names
            if bad:
                raise ConfigError(f"unknown field(s) {sorted(bad)} in section {name!r}; allowed: {sorted(names)}")
            parts[name] = klass(**{k: coerce(klass, k, v) for k, v in sec.items()})
        return cls(**parts).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> WorldModelRunConfig:
        """Read a YAML file with optional sections ``model``, ``energy``, ``data``, ``train``."""
        return cls.from_dict(read_yaml_mapping(path))

    def with_overrides(self, **flat: Any) -> WorldModelRunConfig:
        """A copy with flat ``field=value`` overrides (e.g. ``alpha=2.0``); unknown names are errors."""
        d = self.to_dict()
        where = {k: sec for sec, vals in d.items() for k in vals}
        for k, v in flat.items():
            if k not in where:
                raise ConfigError(f"unknown config field {k!r}; allowed: {sorted(where)}")
            d[where[k]][k] = v
        return WorldModelRunConfig.from_dict(d)


def add_cli_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config`` and one flag per config field (type and help from the dataclasses).

    Flag defaults are ``None`` (meaning: keep the YAML/dataclass value). Booleans take
    ``--flag``, ``--flag=false`` (as ``wandb agent`` writes them) or ``--no_flag``;
    lists take several values (``--ebm_hidden_dims 128 64``). ``--no_wandb`` is short for
    ``--wandb disabled``.
    """
    parser.add_argument("--config", type=str, default=None,
                        help="YAML file with sections model/energy/data/train (defaults: the dataclasses)")
    for sec, klass in _SECTIONS.items():
        add_dataclass_flags(parser, klass, title=sec)
    parser.add_argument("--no_wandb", dest="wandb", action="store_const", const="disabled",
                        help="disable W&B logging (same as --wandb disabled)")
    return parser


def config_from_cli(argv: list[str] | None = None, description: str | None = None) -> WorldModelRunConfig:
    """Parse the command line into a validated :class:`WorldModelRunConfig` (YAML, then flags)."""
    parser = add_cli_args(argparse.ArgumentParser(description=description))
    args = vars(parser.parse_args(argv))
    path = args.pop("config")
    base = WorldModelRunConfig.from_yaml(path) if path else WorldModelRunConfig()
    overrides = {k: v for k, v in args.items() if v is not None}
    return base.with_overrides(**overrides)


def defaults_yaml() -> str:
    """The defaults as YAML (``configs/world_model.yaml`` is this, checked by a test)."""
    head = ("# EB-LNN world-model run configuration: the dataclass defaults of eblnn_agent/config.py,\n"
            "# written by `python -m eblnn_agent.config > configs/world_model.yaml` (a test keeps them equal).\n"
            "# Copy and edit for an experiment: python train/world_model.py --config my.yaml [--flag value ...]\n")
    return head + yaml.safe_dump(WorldModelRunConfig().to_dict(), sort_keys=False)


if __name__ == "__main__":
    print(defaults_yaml(), end="")
