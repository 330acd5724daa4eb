"""A local Secrets Manager endpoint: moto's Secrets Manager behind a real HTTP server.

Why: a deployed Threadline reads its API keys (and an upstream's key) from Secrets
Manager over HTTP, with its own botocore client. Measuring or testing that path needs
a real endpoint on 127.0.0.1, not an in-process mock. moto's own server mode
(`moto.server.ThreadedMotoServer`) needs Flask, which this project does not install;
this serves the same moto backend (its request parsing and responses, AWS's JSON
protocol) from the standard library's WSGI server, in a thread, on a free port.

    with SecretsManagerServer() as secrets:
        arn = secrets.create("threadline/api-keys", "key-1,key-2")
        env = {"AWS_ENDPOINT_URL_SECRETSMANAGER": secrets.endpoint, "API_KEYS_SECRET_ARN": arn}

Dummy credentials and us-east-1 are expected in the clients' environment; the server
accepts any signature, as moto does.
"""

from __future__ import annotations

from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tests.fakes.served import ServedInThread

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    from moto.core.request import Request
    from moto.core.utils import normalize_request
    from moto.secretsmanager.responses import SecretsManagerResponse

    class ServerRequest(Request):
        from_wsgi_server = True  # what moto's own server sets: the body arrives as sent

    request = normalize_request(ServerRequest(environ))
    status, headers, body = SecretsManagerResponse.dispatch(request, request.raw_url, dict(request.headers))
    payload = body.encode() if isinstance(body, str) else bytes(body or b"")
    sent = [(name, str(value)) for name, value in headers.items() if name.lower() != "content-length"]
    start_response(f"{status} {'OK' if status < 400 else 'Error'}", [*sent, ("Content-Length", str(len(payload)))])
    return [payload]


class SecretsManagerServer(ServedInThread):
    def __init__(self) -> None:
        self._serve(
            make_server("127.0.0.1", 0, _application, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        )

    @property
    def endpoint(self) -> str:
        return self.origin

    def client(self) -> Any:
        """A botocore Secrets Manager client on this endpoint (dummy credentials)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "secretsmanager",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # a dummy: the endpoint is local
        )

    def create(self, name: str, value: str) -> str:
        """A new secret holding `value`; its ARN."""
        return str(self.client().create_secret(Name=name, SecretString=value)["ARN"])
