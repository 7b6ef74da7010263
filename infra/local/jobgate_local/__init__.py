"""The embedded local stack: moto, a local HTTP gateway, an SQS poller, the same handlers."""
