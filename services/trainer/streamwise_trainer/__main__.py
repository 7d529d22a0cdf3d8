"""``python -m streamwise_trainer``: prepare, then run the faust worker."""

from __future__ import annotations

import asyncio

import faust

from streamwise_core.signing import Signer
from streamwise_core.telemetry import configure_logging

from .app import create_app, prepare
from .runtime import TrainerRuntime
from .settings import TrainerSettings
from .writer import writer_id


def main() -> None:
    settings = TrainerSettings()
    json_logs = settings.log_format == "json"
    configure_logging(settings.log_level, "trainer", json=json_logs)
    signer = Signer(settings.signing_key_map)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    writer = writer_id()
    trainer = asyncio.run(prepare(settings, signer, writer))
    app = create_app(settings, TrainerRuntime(settings, trainer, signer, writer=writer))
    # Logging is ours (JSON or text, as configured); with JSON logs the banner is left out too.
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), override_logging=False, quiet=json_logs)
    worker.spinner = None  # it writes terminal escapes to stdout, a terminal or not
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
