"""HTTP plumbing the doors share: ASGI types and helpers, the one error renderer and the public views, FastAPI
dependencies and request bodies. Nothing here is a door."""
