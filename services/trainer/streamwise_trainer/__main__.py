"""``python -m streamwise_trainer``: prepare, then run the faust worker."""

from __future__ import annotations

import asyncio
import logging

import faust

from streamwise_core.signing import Signer

from .app import create_app, prepare
from .runtime import TrainerRuntime
from .settings import TrainerSettings


def main() -> None:
    settings = TrainerSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signer = Signer(settings.signing_key_map)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    trainer = asyncio.run(prepare(settings, signer))
    app = create_app(settings, TrainerRuntime(settings, trainer, signer))
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
