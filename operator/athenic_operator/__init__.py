"""The kopf operator for SandboxQuota resources."""
