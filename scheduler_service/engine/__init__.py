"""The scheduling engine: pure rules (cron, retry, dependencies) and the loop that applies them."""
