"""The Lambda entry for buffered events: API Gateway REST (1.0), HTTP API (2.0),
Function URLs and ALB, through Mangum. Mangum buffers the whole response; the
streaming runtime serves streamed responses in production."""

from __future__ import annotations

from mangum import Mangum

from handler.app import app

handler = Mangum(app, lifespan="off")
