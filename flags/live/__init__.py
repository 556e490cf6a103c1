"""Live updates: the relay (core watch -> Channels groups), the websocket protocol and its consumer.

See ``docs/websocket-protocol.md``. ``relay`` holds one watch on the core per
web process and fans events out to that process's consumers; ``protocol``
builds and parses the JSON messages; ``consumers`` serves ``/ws/v1/flags/``.
"""
