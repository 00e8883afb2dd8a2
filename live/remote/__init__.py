"""The remote model: a Ray Serve model server (``main.py serve``) and the runner that uses it (``--remote``).

Modules, one job each: ``protocol`` (the message schema and its checks; no pickle), ``tokens`` (the shared
secret), ``worker`` (the model on one replica, batched), ``batching`` (frames of concurrent streams into one
call), ``server`` (the Serve deployment and its WebSocket handler; imports Ray), ``serve_cli`` (``main.py
serve``), ``client`` (one WebSocket), ``runner`` (``RemoteRunner``: a Runner whose model is on the server,
with reconnection). Ray is only needed to serve; a client needs ``websockets``.
"""
