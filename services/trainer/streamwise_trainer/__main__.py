"""``python -m streamwise_trainer``: prepare every model of the roster, then run the faust worker."""

from __future__ import annotations

import asyncio
import gc

import faust

from streamwise_core.adapters.telemetry import configure_logging
from streamwise_core.contracts.signing import Signer

from .app import create_app, prepare_shared
from .lease import writer_id
from .settings import TrainerSettings
from .supervisor import Supervisor


def main() -> None:
    settings = TrainerSettings()
    json_logs = settings.log_format == "json"
    configure_logging(settings.log_level, "trainer", json=json_logs)
    signer = Signer(settings.signing_key_map)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    writer = writer_id()
    supervisor = Supervisor(settings, signer, writer)

    async def prepare() -> None:
        await prepare_shared(settings)
        await supervisor.prepare()

    asyncio.run(prepare())
    app = create_app(settings, supervisor)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    # Logging is ours (JSON or text, as configured); with JSON logs the banner is left out too.
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), override_logging=False, quiet=json_logs)
    worker.spinner = None  # it writes terminal escapes to stdout, a terminal or not
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
