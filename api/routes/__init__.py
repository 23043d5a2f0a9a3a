"""The API's routes, one module per step of the user's flow; every router carries the /api/v1 prefix itself."""

API_PREFIX = "/api/v1"
