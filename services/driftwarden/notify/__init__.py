"""Alert delivery: ``driftwarden notify`` reads the alerts topic and pages people.

``config`` reads the receivers from TOML, ``delivery`` is the pure core (routing, payloads,
signatures, retry schedule, open alerts), ``service`` the thin Kafka/HTTP adapter.
"""
