"""The api: the app's REST contract (Litestar) over NATS JetStream."""
