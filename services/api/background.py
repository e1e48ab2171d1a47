"""A task an API process runs beside its requests for as long as it lives (the present summary, the past
hours' figures)."""

from __future__ import annotations

import asyncio


class BackgroundTask:
    """Subclasses define ``_run``; ``start`` schedules it in the running loop, ``stop`` cancels it and waits."""

    name = "citysense-background"

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
