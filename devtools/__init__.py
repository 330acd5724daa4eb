"""Tools for development and tests (DynamoDB Local, `make run`, `make invoke`); never deployed."""
