"""The paper's efficiency figures, drawn from one run's cells (aggregated over trials by
analysis.aggregate). Each function returns a Figure of its own (no pyplot state), or None where
the cells cannot support it. Every figure draws what was measured: where energy is missing it
draws what exists and says why in one line; intervals are drawn as error bars; cells whose timing
was untrustworthy are drawn hollow or hatched, and the legend says so."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

import attention_zoo as zoo
from harness.data.rows import STATUSES
from harness.reporting.analysis import numeric, trusted, untrusted

UNTRUSTED = "untrustworthy timing"


def tier(name: str) -> str:
    try:
        return zoo.info(name).tier
    except ValueError:
        return "unknown"


def in_registry_order(names: Iterable[str]) -> list[str]:
    """The mechanisms present, registry order first (baselines first), then any others."""
    present = list(dict.fromkeys(names))
    known = [n for n in zoo.available() if n in present]
    return known + sorted(n for n in present if n not in known)


def colours(names: Iterable[str] | None = None) -> dict[str, Any]:
    """One colour per mechanism, the same in every figure: registry order over a palette as
    long as the registry (husl past ten, so an eleventh mechanism gets its own)."""
    order = in_registry_order([*zoo.available(), *(list(names) if names is not None else [])])
    palette = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return dict(zip(order, palette, strict=True))


def energy_note(rows: pd.DataFrame) -> str | None:
    """Why energy is not drawn (None when it is): the sources' own reasons."""
    if trusted(rows, "energy_j_per_img").notna().any():
        return None
    device = ", ".join(
        sorted(set(rows.get("device_name", pd.Series(dtype=str)).dropna().astype(str)))
    )
    reasons = sorted(set(rows.get("energy_source", pd.Series(dtype=str)).dropna().astype(str)))
    why = "; ".join(r.removeprefix("unavailable: ") for r in reasons) or "no energy source"
    measured = trusted(rows.assign(energy_valid=True), "energy_j_per_img").notna().any()
    if measured:
        why = "energy was measured but flagged invalid (see energy_note)"
    return f"Energy not measured on {device or 'this device'}: {why}."


def _figure(ncols: int, width: float, height: float = 4.5) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _note(fig: Figure, text: str | None) -> None:
    if text:
        fig.supxlabel(text, fontsize=9, color="#555555", wrap=True)


def _log_axis(axis: Any) -> None:
    """Log scale with labelled ticks at 1, 2, 5 x 10^k, numbers not exponents."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _headline(rows: pd.DataFrame, resolution: int) -> pd.DataFrame:
    cells = rows[(rows["resolution"] == resolution) & (rows["mode"] == "infer")]
    return cells[cells["status"] == "ok"].drop_duplicates("attention").set_index("attention")


def tiers(rows: pd.DataFrame, resolution: int) -> Figure:
    """Throughput against energy per image (or, without energy, against peak memory): colour =
    complexity tier, Linear-InfSA a red star, error bars = the throughput interval."""
    cells = _headline(rows, resolution)
    energy = trusted(cells.reset_index(), "energy_j_per_img").to_numpy()
    note = energy_note(cells.reset_index())
    if note is None:
        x, xlabel = energy, "energy per image (J)"
    else:
        x, xlabel = numeric(cells, "peak_mem_bytes").to_numpy() / 2**20, "peak memory (MiB)"
        note = f"{note} x is peak memory instead."
    fig, (ax,) = _figure(1, 8, 5.5)
    ax.set_title(f"Complexity tiers at {resolution}², inference (up and to the left is better)")
    bad = untrusted(cells.reset_index()).to_numpy()
    highlighted = zoo.with_role("highlight")
    for i, (name, row) in enumerate(cells.iterrows()):
        if not np.isfinite(x[i]):
            continue
        star = name in highlighted
        colour = "red" if star else zoo.tier_colour(tier(str(name)))
        thr = row["throughput_img_s"]
        err = [[thr - row.get("throughput_lo", thr)], [row.get("throughput_hi", thr) - thr]]
        ax.errorbar(x[i], thr, yerr=np.clip(err, 0, None), fmt="none", ecolor=colour, alpha=0.6)
        ax.scatter(
            x[i],
            thr,
            s=300 if star else 90,
            marker="*" if star else "o",
            facecolor="none" if bad[i] else colour,
            edgecolor="black" if not bad[i] else colour,
            linewidths=1.5,
            zorder=3,
            gid=str(name),
        )
        ax.annotate(str(name), (x[i], thr), textcoords="offset points", xytext=(7, 5), fontsize=8)
    shown = {tier(str(name)) for name in cells.index}
    handles = [
        Line2D([], [], marker="o", ls="", color=zoo.tier_colour(t), label=t)
        for t in [*zoo.TIERS, *sorted(shown - set(zoo.TIERS))]
        if t in shown
    ]
    stars = [name for name in highlighted if name in cells.index]
    if stars:
        handles.append(
            Line2D([], [], marker="*", ls="", color="red", markersize=13, label=", ".join(stars))
        )
    if bad.any():
        handles.append(
            Line2D([], [], marker="o", ls="", mfc="none", color="black", label=UNTRUSTED)
        )
    ax.legend(handles=handles, title="complexity tier", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("throughput (img/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axis(ax.xaxis)
    _log_axis(ax.yaxis)
    _note(fig, note)
    return fig


def _bars(
    ax: Any,
    order: list[str],
    values: pd.Series,
    lo: pd.Series,
    hi: pd.Series,
    bad: pd.Series,
    palette: dict[str, Any],
) -> None:
    y = np.arange(len(order))
    v = values.reindex(order).to_numpy(float)
    err = np.clip(
        [v - lo.reindex(order).to_numpy(float), hi.reindex(order).to_numpy(float) - v], 0, None
    )
    bars = ax.barh(
        y,
        v,
        xerr=np.nan_to_num(err),
        color=[palette[n] for n in order],
        error_kw={"ecolor": "black", "capsize": 3, "lw": 1},
    )
    for bar, flagged in zip(bars, bad.reindex(order).fillna(False), strict=True):
        if flagged:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_yticks(y, order)
    ax.invert_yaxis()


def dashboard(rows: pd.DataFrame, resolution: int) -> Figure:
    """Speed-up over each reference mechanism (the registry's; softmax and sdpa), throughput,
    and energy per image when measured: inference at the headline size, intervals as error
    bars, untrusted cells hatched."""
    cells = _headline(rows, resolution)
    order = in_registry_order(cells.index)
    thr = numeric(cells, "throughput_img_s")
    lo = numeric(cells, "throughput_lo").fillna(thr)
    hi = numeric(cells, "throughput_hi").fillna(thr)
    bad = untrusted(cells.reset_index()).set_axis(cells.index)
    note = energy_note(cells.reset_index())
    references = zoo.with_role("reference")
    n = len(references)
    panels = n + (1 if note else 2)
    fig, axes = _figure(panels, 5 * panels, max(3.5, 0.45 * len(order) + 1.5))
    fig.suptitle(f"Efficiency dashboard, inference at {resolution}²")
    palette = colours(order)
    for ax, base in zip(axes[:n], references, strict=True):
        ax.set_title(f"speed-up over {base}")
        if base not in thr.index:
            ax.text(
                0.5,
                0.5,
                f"{base} has no ok cell at {resolution}²",
                ha="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            continue
        b, b_lo, b_hi = thr[base], lo[base], hi[base]
        _bars(ax, order, thr / b, lo / b_hi, hi / b_lo, bad | bad.get(base, False), palette)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xlabel("x (throughput ratio)")
    _bars(axes[n], order, thr, lo, hi, bad, palette)
    axes[n].set_title("throughput")
    axes[n].set_xlabel("img/s")
    if not note:
        energy = trusted(cells.reset_index(), "energy_j_per_img").set_axis(cells.index)
        _bars(axes[n + 1], order, energy, energy, energy, bad, palette)
        axes[n + 1].set_title("energy per image")
        axes[n + 1].set_xlabel("J/img")
    if bad.any():
        fig.legend(
            handles=[Patch(facecolor="grey", hatch="//", alpha=0.5, label=UNTRUSTED)],
            loc="outside lower right",
        )
    _note(fig, note)
    return fig


def _by_resolution(
    rows: pd.DataFrame,
    value: str,
    lo: str | None,
    hi: str | None,
    ylabel: str,
    title: str,
    note: str | None = None,
) -> Figure:
    modes = [m for m in ("infer", "train") if m in set(rows["mode"])]
    fig, axes = _figure(len(modes), 7.5 * len(modes), 5.5)
    fig.suptitle(title)
    palette = colours(rows["attention"])
    highlighted = zoo.with_role("highlight")
    stopped = False
    for ax, mode in zip(axes, modes, strict=True):
        subset = rows[rows["mode"] == mode]
        ax.set_title({"infer": "inference", "train": "training step"}[mode])
        if not (subset["status"] == "ok").any():
            ax.text(0.5, 0.5, "no cell completed", ha="center", transform=ax.transAxes)
            continue
        for name in in_registry_order(subset["attention"]):
            mine = subset[subset["attention"] == name].sort_values("resolution")
            ok = mine[mine["status"] == "ok"]
            colour = palette[name]
            if not ok.empty:
                y = numeric(ok, value).to_numpy()
                err = None
                if lo and hi:
                    err = np.clip(
                        [y - numeric(ok, lo).to_numpy(), numeric(ok, hi).to_numpy() - y], 0, None
                    )
                ax.errorbar(
                    ok["resolution"],
                    y,
                    yerr=None if err is None else np.nan_to_num(err),
                    marker="o",
                    color=colour,
                    label=name,
                    lw=3 if name in highlighted else 1.5,
                    capsize=2,
                    mfc="white" if untrusted(ok).any() else colour,
                )
            for status, marker in ((s.name, s.marker) for s in STATUSES.values() if s.marker):
                where = mine[mine["status"] == status]
                if not where.empty:
                    last = (
                        numeric(ok, value).iloc[-1]
                        if not ok.empty
                        else numeric(subset, value).max()
                    )
                    ax.plot(
                        [where["resolution"].min()],
                        [last],
                        marker=marker,
                        ms=12,
                        mew=3,
                        ls="",
                        color=colour,
                        gid=f"{status}:{name}",
                    )
                    stopped = True
        ax.set_xscale("log")
        ax.set_yscale("log")
        sides = sorted(set(subset["resolution"]))
        ax.set_xticks(sides, [str(s) for s in sides], rotation=45)
        ax.xaxis.set_minor_locator(NullLocator())
        _log_axis(ax.yaxis)
        ax.set_xlabel("resolution (px per side)")
        ax.set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    if stopped:
        handles += [
            Line2D([], [], marker="x", ls="", color="black", mew=2, label="out of memory here"),
            Line2D([], [], marker="^", ls="", color="black", label="kernel size limit here"),
        ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    _note(fig, note)
    return fig


def latency(rows: pd.DataFrame) -> Figure:
    """Latency per image against resolution, log-log, with intervals; where a mechanism stops."""
    batch = numeric(rows, "batch_size")
    rows = rows.assign(
        ms_per_img=numeric(rows, "latency_ms") / batch,
        ms_lo=numeric(rows, "latency_lo") / batch,
        ms_hi=numeric(rows, "latency_hi") / batch,
    )
    return _by_resolution(
        rows, "ms_per_img", "ms_lo", "ms_hi", "latency per image (ms)", "Latency against resolution"
    )


def memory(rows: pd.DataFrame) -> Figure:
    rows = rows.assign(peak_mib=numeric(rows, "peak_mem_bytes") / 2**20)
    note = None
    if "train" in set(rows["mode"]):
        note = (
            "Training runs under autocast, which keeps softmax's scores in float32 (twice the "
            "bytes) for softmax, Linformer, Nystrom and Swin but not InfSA's."
        )
    return _by_resolution(
        rows, "peak_mib", None, None, "peak memory (MiB)", "Peak memory against resolution", note
    )


def depth(rows: pd.DataFrame, resolution: int) -> Figure | None:
    """Throughput (and energy, when measured) per model depth, when there is more than one."""
    cells = rows[
        (rows["resolution"] == resolution) & (rows["mode"] == "infer") & (rows["status"] == "ok")
    ]
    if cells["depth"].nunique() < 2:
        return None
    cells = cells.assign(
        energy=trusted(cells, "energy_j_per_img"),
        model=cells["model"] + " (" + cells["depth"].astype(str) + "L)",
    )
    note = energy_note(cells)
    fig, axes = _figure(1 if note else 2, 8 if note else 15)
    fig.suptitle(f"Depth comparison, inference at {resolution}²")
    order = in_registry_order(cells["attention"])
    sns.barplot(cells, x="attention", y="throughput_img_s", hue="model", order=order, ax=axes[0])
    axes[0].set_ylabel("img/s")
    if not note:
        sns.barplot(cells, x="attention", y="energy", hue="model", order=order, ax=axes[1])
        axes[1].set_ylabel("J/img")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    _note(fig, note)
    return fig


def arithmetic_rate(rows: pd.DataFrame, resolution: int) -> Figure:
    """Achieved FLOP/s (units scaled to the data) and, when measured, average power."""
    cells = rows[(rows["resolution"] == resolution) & (rows["status"] == "ok")].copy()
    rate = achieved_flops(cells)
    scale, unit = next(
        (
            (s, u)
            for s, u in ((1e12, "TFLOP/s"), (1e9, "GFLOP/s"), (1e6, "MFLOP/s"))
            if rate.max() >= s
        ),
        (1.0, "FLOP/s"),
    )
    cells["rate"] = rate / scale
    note = energy_note(cells)
    fig, axes = _figure(1 if note else 2, 8 if note else 15)
    fig.suptitle(f"Arithmetic rate{'' if note else ' and power'} at {resolution}²")
    order = in_registry_order(cells["attention"])
    sns.barplot(cells, x="attention", y="rate", hue="mode", order=order, ax=axes[0])
    axes[0].set_ylabel(f"achieved {unit} (train: 3x forward)")
    if not note:
        power = trusted(cells, "avg_power_w")
        sns.barplot(
            cells.assign(power=power), x="attention", y="power", hue="mode", order=order, ax=axes[1]
        )
        idle = numeric(cells, "idle_power_w").median()
        if pd.notna(idle):
            axes[1].axhline(idle, color="black", ls="--", lw=1, label="idle")
        axes[1].set_ylabel("average power (W)")
        axes[1].legend()
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    _note(fig, note)
    return fig


def achieved_flops(rows: pd.DataFrame) -> pd.Series:
    factor = rows["mode"].map({"infer": 1, "train": 3})
    return numeric(rows, "flops") * factor * numeric(rows, "throughput_img_s")
