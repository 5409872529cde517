"""The inline HTTP proxy (`proxy`), its upstream client (`client`, `http1`, the port in `upstream`), the admin
listener (`admin`) and the server process model (`server`).

Nothing is imported here: the configuration model (`strangler.gateway.config`) is loaded by every command,
and the CDC connector and the event mapper need none of the proxy's dependencies.
"""
