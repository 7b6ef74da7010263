"""The HTTP API: FastAPI routers behind API Gateway (through Mangum)."""
