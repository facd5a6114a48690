"""The embedded default deployment: sandbox hosts, the tiny model and the local Hub-protocol server."""
