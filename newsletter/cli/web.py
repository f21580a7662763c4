"""``newsletter serve``: the subscriber web service on uvicorn."""

from __future__ import annotations

import logging

import click

from . import App, main, pass_app


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve sign-up, preferences, unsubscribe, the archive and the bounce webhooks.

    Put it behind a TLS-terminating reverse proxy and list that proxy in
    [web] trusted_proxies so that client addresses (rate limits, consent
    records) come from X-Forwarded-For.
    """
    import uvicorn

    from ..web import create_app

    asgi = create_app(app.config, app.engine)
    logging.getLogger("newsletter.web.access").setLevel(logging.INFO)
    click.echo(f"serving {app.config.site.name} on http://{host}:{port}/ (links in mails use "
               f"{app.config.site.base_url})")
    # uvicorn's access log is off: it would write every personal link (tokens) into the log;
    # newsletter.web.access logs requests with the tokens removed.  Proxy headers are
    # handled by the app itself ([web] trusted_proxies).
    uvicorn.run(asgi, host=host, port=port, access_log=False, proxy_headers=False, server_header=False,
                log_level="info")
