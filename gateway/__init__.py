"""API-key authorization gateway: a reverse proxy that checks keys, scopes and client IPs."""

__version__ = "0.2.0"
