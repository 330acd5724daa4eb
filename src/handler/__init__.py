"""The faces of the service: the FastAPI app and the Lambda entry points."""
