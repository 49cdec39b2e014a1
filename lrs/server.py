"""`lrs serve`: uvicorn, ending the live event streams as soon as shutdown starts.

uvicorn shuts down in this order: stop accepting connections, wait for the open ones to finish
their responses, then run the application's shutdown (lifespan). A Server-Sent Events response
never finishes by itself, so without help the wait lasts until the client goes away: SIGTERM
leaves the server hanging, or, with a graceful-shutdown timeout, uvicorn cancels the response
and logs a CancelledError traceback. Here the streams are told to end first, so they finish
cleanly (clients reconnect, with Last-Event-ID, to whichever instance serves next).
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from lrs.app import create_app
from lrs.config import Settings


class Server(uvicorn.Server):
    """uvicorn's server for the LRS application: ends its SSE streams when shutdown starts."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.apps: list[FastAPI] = []

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for app in self.apps:
            app.state.services.bus.end_streams()
        await super().shutdown(sockets)


def serve(settings: Settings, host: str, port: int, log_level: str, **options: Any) -> None:
    server: Server

    def make_app() -> FastAPI:
        # Built by uvicorn inside its event loop, as with `lrs.app:create_app --factory`.
        app = create_app(settings)
        server.apps.append(app)
        return app

    config = uvicorn.Config(
        make_app,
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        **options,
    )
    server = Server(config)
    server.run()
