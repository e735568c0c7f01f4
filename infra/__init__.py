"""The Pulumi program's parts: one ComponentResource per part of the system.

`__main__.py` reads the stack config (`infra.config`) and calls `infra.stack.deploy`,
which composes storage, alerting, workflow, analytics, ingest, api (the Chalice app)
and monitoring. Definitions (state machine, dashboard, alarms, table, lake) come from
`pipeline/`, the same functions the local stack uses.
"""
