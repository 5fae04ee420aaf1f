"""The `attnbench` sweeper, as Hydra finds plugins: in the hydra_plugins namespace package.

This directory is installed as `hydra_plugins.attnbench_sweeper` (pyproject.toml). Hydra imports
every plugin module at start-up, so this one stays light: the work is in harness.running.sweep.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class AttnbenchSweeper(Sweeper):
    """Plans the sweep with Hydra's public override parser, launches it with the configured
    launcher, then builds results.csv, the summary and the report (harness.running.sweep.run)."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from harness.running import sweep

        assert self.hydra_context and self.config is not None and self.launcher is not None
        return sweep.run(self.hydra_context, self.config, self.launcher, self.params, arguments)
