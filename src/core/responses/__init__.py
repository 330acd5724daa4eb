"""The OpenAI Responses API over server-side sessions: a chain of responses is a session.

- `wire`: the request we accept and the bodies (Response objects, output items, usage);
- `items`: input items, tools and options translated to the chat format providers speak;
- `service`: prepare / complete / stream / retrieve / delete (the chain rules are there);
- `sse`: `event:` / `data:` framing and the stream's opening.

The items and access patterns in DynamoDB are in `core.store.responses`.
"""
