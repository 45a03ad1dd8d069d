"""Plots of furnace trajectories (matplotlib is imported lazily, on first use)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["plot_trajectories", "render_history"]


def plot_trajectories(trajectories: Mapping[str, Mapping[str, np.ndarray]], dt: float, title: str = ""):
    """Plot several controllers' episodes on one figure and return it.

    Each value maps ``"obs"`` [T, 8] and ``"actions"`` [T, 2] (optionally ``"co_limit"``).
    Panels: temperature vs setpoint, O2, CO, fuel and air commands.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    for i, (name, tr) in enumerate(trajectories.items()):
        obs = np.asarray(tr["obs"])
        act = np.asarray(tr["actions"])
        t = np.arange(len(obs)) * dt / 60.0
        color = plt.get_cmap("tab20")(i % 20) if len(trajectories) > 10 else f"C{i}"
        axes[0].plot(t, obs[:, 0], color=color, label=name, lw=1.2)
        if i == 0:
            axes[0].plot(t, obs[:, 1], "k--", lw=1.0, label="setpoint")
        axes[1].plot(t, obs[:, 2], color=color, lw=1.0)
        axes[2].plot(t, obs[:, 3], color=color, lw=1.0)
        ta = np.arange(len(act)) * dt / 60.0
        axes[3].plot(ta, act[:, 0], color=color, lw=1.0)
        axes[4].plot(ta, act[:, 1], color=color, lw=1.0)
    axes[2].axhline(100.0, color="r", ls=":", lw=1.0)
    axes[1].axhline(1.0, color="r", ls=":", lw=1.0)
    labels = ["temperature [degC]", "O2 [% dry]", "CO [ppm]", "fuel valve cmd", "air damper cmd"]
    for ax, lab in zip(axes, labels, strict=True):
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("symlog", linthresh=100.0)
    axes[-1].set_xlabel("time [min]")
    axes[0].legend(fontsize=8, ncol=3, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def render_history(history: Sequence[tuple[np.ndarray, np.ndarray, float]], dt: float) -> np.ndarray:
    """RGB array [H, W, 3] of the episode so far (for ``render_mode="rgb_array"``)."""
    import matplotlib.pyplot as plt

    obs = np.stack([h[0] for h in history])
    act = np.stack([h[1] for h in history])
    fig = plot_trajectories({"controller": {"obs": obs, "actions": act}}, dt)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
