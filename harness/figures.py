"""The paper's efficiency figures, drawn from measured rows. Each function takes one run's rows
(a DataFrame in the result schema) and returns a matplotlib Figure, or None if the rows cannot
support it. Energy panels never show a zero for energy that was not measured."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import attention_zoo as zoo

from .analysis import numeric, trusted

TIER_COLOURS = {"O(N^2)": "#4c72b0", "O(N)": "#55a868", "O(N*w^2)": "#dd8452"}
STAR = "linear_infsa"


def tier(name: str) -> str:
    try:
        return zoo.info(name).tier
    except ValueError:
        return "unknown"


def per_image_energy(rows: pd.DataFrame) -> pd.Series:
    return trusted(rows, "energy_j_per_img")


def in_registry_order(names: Iterable[str]) -> list[str]:
    """The mechanisms present, in the registry's order (baselines first)."""
    present = set(names)
    return [n for n in zoo.available() if n in present]


def _figure(ncols: int, width: float, height: float = 4.5) -> tuple[Figure, Any]:
    """A Figure of its own (no pyplot state, no backend needed) with one row of axes."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def no_energy(ax: Any, rows: pd.DataFrame) -> None:
    device = ", ".join(sorted(set(rows["device_name"].dropna().astype(str)))) or "this device"
    ax.text(
        0.5,
        0.5,
        f"energy not measured on {device}",
        ha="center",
        va="center",
        transform=ax.transAxes,
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def tiers(rows: pd.DataFrame, resolution: int) -> Figure:
    """Throughput against J/img, colour = complexity tier, Linear-InfSA a red star."""
    cells = _ok(rows[(rows["resolution"] == resolution) & (rows["mode"] == "infer")]).copy()
    cells["energy"] = per_image_energy(cells)
    fig, (ax,) = _figure(1, 7, 5)
    ax.set_title(f"Complexity tiers at {resolution}², inference (top-left is best)")
    if cells["energy"].isna().all():
        no_energy(ax, rows)
        return fig
    for name, row in cells.dropna(subset=["energy"]).set_index("attention").iterrows():
        star = name == STAR
        ax.scatter(
            row["energy"],
            row["throughput_img_s"],
            s=260 if star else 80,
            marker="*" if star else "o",
            color="red" if star else TIER_COLOURS.get(tier(name), "grey"),
            edgecolor="black",
            zorder=3,
            gid=name,
        )
        ax.annotate(
            name,
            (row["energy"], row["throughput_img_s"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    handles = [Line2D([], [], marker="o", ls="", color=c, label=t) for t, c in TIER_COLOURS.items()]
    handles.append(
        Line2D([], [], marker="*", ls="", color="red", markersize=12, label="Linear-InfSA")
    )
    ax.legend(handles=handles, title="complexity tier")
    ax.set_xlabel("energy per image (J)")
    ax.set_ylabel("throughput (img/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    return fig


def dashboard(rows: pd.DataFrame, resolution: int) -> Figure:
    """Speed-up over softmax and over sdpa, throughput, energy per image: inference bars."""
    cells = _ok(rows[(rows["resolution"] == resolution) & (rows["mode"] == "infer")])
    cells = cells.set_index("attention")
    order = in_registry_order(cells.index)
    thr = cells["throughput_img_s"].reindex(order)
    energy = per_image_energy(cells).reindex(order)
    fig, axes = _figure(4, 18)
    fig.suptitle(f"Efficiency dashboard, inference at {resolution}²")
    for ax, baseline in zip(axes[:2], ("softmax", "sdpa"), strict=True):
        ax.set_title(f"speed-up over {baseline}")
        if baseline in thr.index:
            sns.barplot(x=(thr / thr[baseline]).values, y=order, ax=ax, color="#4c72b0")
            ax.axvline(1.0, color="black", lw=0.8)
            ax.set_xlabel("x (throughput ratio)")
        else:
            ax.text(
                0.5,
                0.5,
                f"{baseline} did not run at {resolution}²",
                ha="center",
                transform=ax.transAxes,
            )
    sns.barplot(x=thr.values, y=order, ax=axes[2], color="#55a868")
    axes[2].set_title("throughput")
    axes[2].set_xlabel("img/s")
    axes[3].set_title("energy per image")
    if energy.isna().all():
        no_energy(axes[3], rows)
    else:
        sns.barplot(x=energy.values, y=order, ax=axes[3], color="#dd8452")
        axes[3].set_xlabel("J/img")
    fig.tight_layout()
    return fig


def _by_resolution(rows: pd.DataFrame, value: str, ylabel: str, title: str) -> Figure:
    modes = [m for m in ("infer", "train") if m in set(rows["mode"])]
    fig, row = _figure(len(modes), 7 * len(modes), 5)
    fig.suptitle(title)
    palette = dict(
        zip(zoo.available(), sns.color_palette("tab10", len(zoo.available())), strict=True)
    )
    for ax, mode in zip(row, modes, strict=True):
        subset = rows[rows["mode"] == mode]
        ax.set_title({"infer": "inference", "train": "training step"}[mode])
        if not (subset["status"] == "ok").any():
            ax.text(0.5, 0.5, "no cell completed", ha="center", transform=ax.transAxes)
            continue
        oom_label = "OOM"
        for name in in_registry_order(subset["attention"]):
            mine = subset[subset["attention"] == name].sort_values("resolution")
            ok = mine[mine["status"] == "ok"]
            colour = palette[name]
            if not ok.empty:
                ax.plot(
                    ok["resolution"],
                    ok[value],
                    marker="o",
                    color=colour,
                    label=name,
                    lw=3 if name == STAR else 1.5,
                )
            oom = mine[mine["status"] == "oom"]
            if not oom.empty:
                last = ok[value].iloc[-1] if not ok.empty else subset[value].max()
                ax.plot(
                    [oom["resolution"].min()],
                    [last],
                    marker="x",
                    ms=12,
                    mew=3,
                    ls="",
                    color=colour,
                    label=oom_label,
                    gid=f"oom:{name}",
                )
                oom_label = "_nolegend_"
        ax.set_xscale("log")
        ax.set_yscale("log")
        sides = sorted(set(subset["resolution"]))
        ax.set_xticks(sides, [str(s) for s in sides], rotation=45)
        ax.minorticks_off()
        ax.set_xlabel("resolution (px per side)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def latency(rows: pd.DataFrame) -> Figure:
    """Latency per image against resolution, log-log, x where a mechanism ran out of memory."""
    rows = rows.assign(ms_per_img=rows["latency_ms"] / rows["batch_size"])
    return _by_resolution(
        rows,
        "ms_per_img",
        "latency per image (ms)",
        "Latency against resolution (x: out of memory)",
    )


def memory(rows: pd.DataFrame) -> Figure:
    rows = rows.assign(peak_gib=rows["peak_mem_bytes"] / 2**30)
    return _by_resolution(
        rows, "peak_gib", "peak memory (GiB)", "Peak memory against resolution (x: out of memory)"
    )


def depth(rows: pd.DataFrame, resolution: int) -> Figure | None:
    """Throughput and energy per model depth, when the rows hold more than one depth."""
    cells = _ok(rows[(rows["resolution"] == resolution) & (rows["mode"] == "infer")]).copy()
    if cells["depth"].nunique() < 2:
        return None
    cells["energy"] = per_image_energy(cells)
    cells["model"] = cells["model"] + " (" + cells["depth"].astype(str) + "L)"
    fig, axes = _figure(2, 14)
    fig.suptitle(f"Depth comparison, inference at {resolution}²")
    order = in_registry_order(cells["attention"])
    sns.barplot(cells, x="attention", y="throughput_img_s", hue="model", order=order, ax=axes[0])
    axes[0].set_ylabel("img/s")
    if cells["energy"].isna().all():
        no_energy(axes[1], rows)
    else:
        sns.barplot(cells, x="attention", y="energy", hue="model", order=order, ax=axes[1])
        axes[1].set_ylabel("J/img")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def power_and_tflops(rows: pd.DataFrame, resolution: int) -> Figure:
    """Average power (energy = power x time made visible) and achieved TFLOP/s."""
    cells = _ok(rows[(rows["resolution"] == resolution)]).copy()
    cells["tflops"] = achieved_tflops(cells)
    order = in_registry_order(cells["attention"])
    fig, axes = _figure(2, 14)
    fig.suptitle(f"Power and arithmetic rate at {resolution}²")
    power = trusted(cells, "avg_power_w")
    if power.isna().all():
        no_energy(axes[0], rows)
    else:
        sns.barplot(
            cells.assign(power=power), x="attention", y="power", hue="mode", order=order, ax=axes[0]
        )
        idle = numeric(cells, "idle_power_w").median()
        if pd.notna(idle):
            axes[0].axhline(idle, color="black", ls="--", lw=1, label="idle")
            axes[0].legend()
        axes[0].set_ylabel("average power (W)")
    sns.barplot(cells, x="attention", y="tflops", hue="mode", order=order, ax=axes[1])
    axes[1].set_ylabel("achieved TFLOP/s (train: 3x forward)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def achieved_tflops(rows: pd.DataFrame) -> pd.Series:
    factor = rows["mode"].map({"infer": 1, "train": 3})
    return rows["flops"] * factor * rows["throughput_img_s"] / 1e12
