"""Threadline's own Lambda runtime: real response streaming for the ASGI app.

Lambda's managed Python runtime cannot stream a response, and Mangum buffers every
body, so the function runs this runtime instead of the managed one. Lambda starts
the `exec-wrapper` script beside this file (the function's `AWS_LAMBDA_EXEC_WRAPPER`)
with the interpreter and the managed runtime's arguments; the script keeps the
interpreter and runs `python -m handler.streaming`, a loop that speaks the Lambda
Runtime API itself:

- `GET /2018-06-01/runtime/invocation/next` for each event (`runtime_api`);
- the event becomes an ASGI request through Mangum's own event handlers (REST API
  payload 1.0, HTTP API and Function URL payload 2.0, ALB), and the app runs;
- the response is POSTed to `/runtime/invocation/{id}/response` in streaming mode:
  `Lambda-Runtime-Function-Response-Mode: streaming`, chunked transfer encoding,
  `Content-Type: application/vnd.awslambda.http-integration-response`, a JSON
  prelude (`statusCode`, `headers`, `cookies`), eight NUL bytes, then every body
  chunk the app sends, each as its own HTTP chunk, flushed at once (`asgi`);
- an error after the first byte goes out as the trailers
  `Lambda-Runtime-Function-Error-Type` / `Lambda-Runtime-Function-Error-Body`
  (declared up front in `Trailer`); an error before it goes to `.../error`; a
  failure while importing the app goes to `/runtime/init/error` (`runtime`).

AWS's documentation of the protocol this implements:

- Custom runtime response streaming:
  https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming
- The Runtime API (next, response, init error, invocation error):
  https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
- The prelude and delimiter API Gateway expects from a streaming Lambda proxy:
  https://docs.aws.amazon.com/apigateway/latest/developerguide/response-transfer-mode-lambda.html
- Wrapper scripts (`AWS_LAMBDA_EXEC_WRAPPER`):
  https://docs.aws.amazon.com/lambda/latest/dg/runtimes-modify.html#runtime-wrapper

Nothing here is imported at package import: `python -m handler.streaming` loads
only the standard library and Mangum before it imports the app.
"""
