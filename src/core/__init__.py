"""Threadline's service: wire models, session rules, the store and the model providers.

Nothing in this package knows about Lambda, Mangum or the web framework, so the
same code serves the FastAPI app, the Lambda runtimes and the tests.
"""
